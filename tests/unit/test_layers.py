"""The layers of the code base, held by import-linter (``[tool.importlinter]`` in pyproject.toml):
``shared`` at the bottom, ``services`` / ``training`` / ``deploy`` beside each other on it,
``benchmarks`` on top; and no two modules of one package import each other (no exception).
Every import counts, function-local ones included.

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
    assert "2 kept, 0 broken" in run.stdout


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


def test_a_circle_closed_inside_a_function_is_found(tmp_path):
    """The no-circles contract (which names no exception) sees a circle that only a function-local
    import closes, as the bundle's checks import the encoders inside their functions."""
    package = tmp_path / "loop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def late():\n    from loop import high\n\n    return high\n")
    (package / "high.py").write_text("from loop import low\n")
    config = tmp_path / "acyclic.ini"
    config.write_text(
        textwrap.dedent("""
        [importlinter]
        root_packages =
            loop

        [importlinter:contract:acyclic]
        name = no circles
        type = acyclic_siblings
        ancestors =
            loop
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and "No cycles are allowed in loop." in run.stdout, run.stdout[-3000:]
