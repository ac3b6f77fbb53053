"""Errors a linter finds before a user does: ruff with pyflakes' rules (undefined and unused names,
imports, redefinitions) and syntax errors, over the whole repository (``[tool.ruff]`` in
pyproject.toml). A name used after ``del`` or a missing import in a branch no test reaches fails here.
And one layout: the tree is as ``ruff format`` writes it (run it before committing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.settings import PROJECT_ROOT

RUFF = Path(sys.executable).parent / "ruff"


def _ruff(*args: str, cwd: Path = PROJECT_ROOT, command: str = "check") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RUFF), command, "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_code_base_has_no_pyflakes_or_syntax_errors():
    assert RUFF.is_file(), f"{RUFF} is missing: the set-up installs ruff ('.[test]')"
    run = _ruff(".")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_the_linter_reports_an_undefined_name(tmp_path):
    (tmp_path / "pyproject.toml").write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    (tmp_path / "broken.py").write_text("def f():\n    return undefined_name\n")
    run = _ruff(".", cwd=tmp_path)
    assert run.returncode == 1 and "F821" in run.stdout, run.stdout


def test_the_code_base_is_formatted():
    run = _ruff("--check", ".", command="format")
    assert run.returncode == 0, "run `.venv/bin/ruff format .`:\n" + run.stdout[-6000:] + run.stderr[-2000:]


def test_the_format_check_reports_a_file_out_of_format(tmp_path):
    (tmp_path / "pyproject.toml").write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    (tmp_path / "squashed.py").write_text("x = [1,2 ,3]\n")
    run = _ruff("--check", ".", cwd=tmp_path, command="format")
    assert run.returncode == 1 and "squashed.py" in run.stdout, run.stdout
