"""The streaming services by name: what ``emotion serve NAME`` runs."""

from __future__ import annotations

from collections.abc import Callable

from shared.runtime import Service
from shared.settings import Settings


def _asr_alignment(settings: Settings) -> Service:
    from services.asr_alignment import AsrAlignmentService

    return AsrAlignmentService(settings)


def _speech_encoder(settings: Settings) -> Service:
    from services.speech_encoder import SpeechEncoderService

    return SpeechEncoderService(settings)


def _text_encoder(settings: Settings) -> Service:
    from services.text_encoder import TextEncoderService

    return TextEncoderService(settings)


def _graph_gat(settings: Settings) -> Service:
    from services.graph_gat import GraphGatService

    return GraphGatService(settings)


def _moe_fusion(settings: Settings) -> Service:
    from services.moe_fusion import MoeFusionService

    return MoeFusionService(settings)


SERVICES: dict[str, Callable[[Settings], Service]] = {
    "asr_alignment": _asr_alignment,
    "text_encoder": _text_encoder,
    "speech_encoder": _speech_encoder,
    "graph_gat": _graph_gat,
    "moe_fusion": _moe_fusion,
}
"""Factories, imported lazily so that ``emotion --help`` stays fast."""
