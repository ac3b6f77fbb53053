"""Files that readers never see half-written: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
from pathlib import Path


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
