"""Device, thread and loading helpers shared by the encoders."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..model_store.errors import BundleError
from ..model_store.resolve import ResolvedModel, resolve

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from shared.settings import Settings

log = logging.getLogger("training.encoders")

DEFAULT_THREADS = 1
"""Torch intra-op threads when none are given: 1, because on the 2-core target the services share the
cores (Kafka, Triton, several Python services) and oversubscribed OpenMP threads are several times slower."""


def pick_device(device: str | None) -> torch.device:
    """``auto``/None -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    import torch  # here: the ASR path (CTranslate2) never needs it, and it costs ~0.3 GB per process

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (process-wide) when ``threads`` is given and differs."""
    import torch

    if threads is not None and threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def resolve_for(settings: Settings, name: str | None, role: str) -> ResolvedModel:
    """The bundle model ``name`` (or the configured one for ``role``), checked to have that role."""
    resolved = resolve(settings, name or role)
    if resolved.role != role:
        raise BundleError(f"model {resolved.name!r} is a {resolved.role} model, not a {role}")
    return resolved


def ctranslate2_device(device: str | None) -> tuple[str, int]:
    """Like :func:`pick_device`, for CTranslate2 (faster-whisper), without importing torch:
    ``(type, index)``."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if device in (None, "auto"):
        return ("cuda", 0) if gpus else ("cpu", 0)
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: expected auto, cpu, cuda or cuda:<index>")
    if kind == "cuda" and not gpus:
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return kind, int(index or 0)


def settings_device(settings: Settings, device: str | None) -> str:
    return device if device is not None else settings.models.device
