"""The layers of the code base, held by import-linter (``[tool.importlinter]`` in pyproject.toml):
``shared`` at the bottom, ``services`` / ``training`` / ``deploy`` beside each other on it,
``benchmarks`` on top; and no two modules of one package import each other (one named exception).
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


def test_the_one_import_circle_left_is_the_one_the_contract_names(tmp_path):
    """Without its ignore list, the no-circles contract must find exactly the circle it names."""
    config = tmp_path / "no-exceptions.ini"
    config.write_text(
        textwrap.dedent("""
        [importlinter]
        root_packages =
            shared
            services
            training
            deploy
            benchmarks

        [importlinter:contract:acyclic]
        name = no circles, no exceptions
        type = acyclic_siblings
        ancestors =
            shared
            services
            training
            deploy
            benchmarks
    """)
    )
    run = _lint(str(config))
    assert run.returncode == 1, run.stdout[-3000:]
    assert "No cycles are allowed in training." in run.stdout and ".encoders -> .bundle" in run.stdout, run.stdout[
        -3000:
    ]
    assert run.stdout.count("No cycles are allowed in") == 1, run.stdout[-3000:]
