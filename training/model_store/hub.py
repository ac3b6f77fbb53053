"""The Hugging Face Hub and its local cache.

The Hub is only contacted by the ``paper`` profile, and only when it answers a quick probe;
otherwise ``HF_HUB_OFFLINE`` is switched on for this process so that no library (transformers,
faster-whisper, huggingface_hub) waits on network timeouts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("training.bundle")

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0

_reachable: dict[str, bool] = {}
_lock = threading.Lock()


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def _env_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _probe(url: str, timeout: float) -> bool:
    """True when ``url`` answers an HTTP request at all (any status) within ``timeout`` seconds."""
    result: list[bool] = []

    def run() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # the server answered (404/401/...): the hub is reachable
        except (urllib.error.URLError, OSError, ValueError):
            result.append(False)

    # DNS lookups ignore the socket timeout: bound the whole probe with a thread join.
    t = threading.Thread(target=run, name="hf-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def set_offline() -> None:
    """Switch huggingface_hub (and so transformers / faster-whisper) to offline mode."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True  # read at import time: patch the live value as well
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of transformers
        pass


def hub_reachable(timeout: float = PROBE_TIMEOUT_S, *, refresh: bool = False) -> bool:
    """Whether the Hub answers; the result is cached per process and per endpoint.

    ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) counts as unreachable without probing.
    When the Hub is unreachable, offline mode is switched on (:func:`set_offline`).
    """
    if _env_offline():
        log.debug("Hugging Face Hub: offline mode set in the environment (HF_HUB_OFFLINE)")
        set_offline()
        return False
    url = endpoint()
    with _lock:
        if not refresh and url in _reachable:
            return _reachable[url]
        started = time.monotonic()
        ok = _probe(url, timeout)
        log.info(
            "Hugging Face Hub %s %s (probe %.1f s, timeout %.0f s)",
            url,
            "reachable" if ok else "unreachable",
            time.monotonic() - started,
            timeout,
        )
        if not ok:
            set_offline()
        _reachable[url] = ok
        return ok


def hf_cache_dir() -> Path:
    """The Hub cache directory, read from the environment at call time."""
    if cache := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(cache)))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def cached_snapshot(repo_id: str, required: tuple[str, ...] = ("config.json",)) -> Path | None:
    """Path of the newest cached snapshot of ``repo_id`` holding ``required``, without network.

    Follows ``refs/main`` when present, else takes the most recently modified snapshot.
    """
    repo_dir = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    candidates += sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in candidates:
        if snap.is_dir() and all((snap / f).exists() for f in required):
            return snap
    return None
