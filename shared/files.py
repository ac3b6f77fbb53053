"""Files that readers never see half-written (a temporary file beside the target, then a rename),
and files named by their content (a SHA-256 digest, remembered while the file is unchanged)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

_CHUNK = 8 << 20


def sha256_file(path: Path | str, progress: Callable[[int], object] | None = None) -> str:
    """SHA-256 hex digest of a file, streamed in 8 MiB chunks (``progress`` gets each chunk's size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return h.hexdigest()


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def content_digest(path: Path | str) -> str:
    """:func:`sha256_file` of ``path``, remembered in this process while the file's inode, size and
    mtime stay the same (so a corpus is read once per process, however often its files are keyed).

    Unlike a stamp of path, size and mtime, the digest survives a copy of the file to another place
    or a fresh provisioning of the same bytes.
    """
    st = os.stat(path)
    stamp = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(stamp)
    if digest is None:
        digest = _DIGESTS[stamp] = sha256_file(path)
    return digest


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (readers never see half).

    ``mode`` (e.g. ``0o600`` for a secret) is the file's mode from its creation on, so the text is
    never readable by others even for a moment.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if mode is not None:
        os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, path)
