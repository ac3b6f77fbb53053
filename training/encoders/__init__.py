"""The three pretrained front-ends of the paper, loaded from the model bundle.

* :class:`TextEncoder` (``text.py``): ``encode(texts) -> TextEmbedding`` with ``hidden``
  ``[B, max_tokens, D]``, ``mask`` and character ``offsets``.
* :class:`SpeechEncoder` (``speech.py``): ``encode(waveforms) -> SpeechEmbedding`` with ``frames``
  ``[B, max_frames, D]``, ``mask`` and ``frame_times``.
* :class:`Transcriber` (``asr.py``): ``transcribe(audio) -> Transcript`` with word timestamps.

The text and speech encoders run their network on torch or, once ``emotion export`` has written it
for ONNX Runtime, without torch (``onnx.py``; what their CPU Triton instances do).

Attributes are imported lazily so that ``import training.encoders.audio`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .asr import Segment, Transcriber, Transcript, Word
    from .speech import SpeechEmbedding, SpeechEncoder
    from .text import TextEmbedding, TextEncoder

_EXPORTS = {
    "TextEncoder": "text",
    "TextEmbedding": "text",
    "SpeechEncoder": "speech",
    "SpeechEmbedding": "speech",
    "Transcriber": "asr",
    "Transcript": "asr",
    "Segment": "asr",
    "Word": "asr",
}

__all__ = [
    "Segment",
    "SpeechEmbedding",
    "SpeechEncoder",
    "TextEmbedding",
    "TextEncoder",
    "Transcriber",
    "Transcript",
    "Word",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
