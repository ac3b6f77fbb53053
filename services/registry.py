"""The streaming services by name: what ``emotion serve NAME`` runs."""

from __future__ import annotations

from collections.abc import Callable

from shared.runtime import Service
from shared.settings import Settings


def _text_encoder(settings: Settings) -> Service:
    from services.text_encoder import TextEncoderService

    return TextEncoderService(settings)


SERVICES: dict[str, Callable[[Settings], Service]] = {
    "text_encoder": _text_encoder,
}
"""Factories, imported lazily so that ``emotion --help`` stays fast."""
