"""The layers of the code base, held by import-linter (``[tool.importlinter]`` in pyproject.toml):
``shared`` at the bottom, ``services`` / ``training`` / ``deploy`` beside each other on it,
``benchmarks`` on top. Every import counts, function-local ones included.

The linter runs as its own process (``lint-imports``, installed with the test dependencies): it
sets up its own console output, which must not leak into the other tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from shared.settings import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_dependencies_point_one_way():
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} is missing: the set-up installs import-linter ('.[test]')"
    run = _lint()
    assert run.returncode == 0, "a layer imports one it must not:\n" + run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def test_the_linter_sees_the_imports_it_judges(tmp_path):
    """The same linter with a contract that today's code breaks (training imports shared) must fail."""
    config = tmp_path / "inverted.ini"
    config.write_text(
        textwrap.dedent("""
        [importlinter]
        root_packages =
            shared
            training

        [importlinter:contract:inverted]
        name = training above nothing
        type = forbidden
        source_modules = training
        forbidden_modules = shared
    """)
    )
    run = _lint(str(config))
    assert run.returncode == 1 and "training is not allowed to import shared" in run.stdout, run.stdout[-3000:]
