"""The image builds' pip requirements, read from ``pyproject.toml`` so that they never drift from it.

    python requirements.py pyproject.toml [--extra bundle] [--exclude nvidia-pytriton] [--only torch]

Prints one requirement per line: the project's ``dependencies`` plus the named extras, less the
excluded distributions (``--only`` keeps just the named ones).  Both images leave out
``nvidia-pytriton``: it exists to carry a ``tritonserver`` binary for the local stack, which the
Triton image has already and the service image never runs.  Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path


def distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``Torch[x]>=2`` -> ``torch``)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if name is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", name.group(1)).lower()


def requirements(pyproject: Path, extras: list[str] = (), exclude: list[str] = (), only: list[str] = ()) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted += optional[extra]
    dropped = {distribution(e) for e in exclude}
    kept = {distribution(o) for o in only}
    return [r for r in wanted if distribution(r) not in dropped and (not kept or distribution(r) in kept)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pyproject", type=Path)
    p.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to add")
    p.add_argument("--exclude", action="append", default=[], help="a distribution to leave out")
    p.add_argument("--only", action="append", default=[], help="keep only these distributions")
    args = p.parse_args(argv)
    for line in requirements(args.pyproject, args.extra, args.exclude, args.only):
        print(line.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
