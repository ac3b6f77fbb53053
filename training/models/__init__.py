"""Emotion models of the paper: the complementary CA-MoE / SP-MoE fusion and its baselines.

Everything training, Triton export and serving need::

    from training.models import FusionConfig, build_model, collate

    model = build_model("proposed", FusionConfig(d_text=384, d_speech=512))
    out = model(collate(utterances))          # FusionOutput: logits, probs, branch_logits, aux_loss

Registry (``MODELS``; every entry is built from one :class:`FusionConfig` and has the same
``forward(batch) -> FusionOutput``):

================  ==============================================================================
``proposed``      :class:`ComplementaryFusion` with ``config.branches`` (default CA-MoE + SP-MoE)
``ca_moe``        the same with the CA-MoE branch only
``sp_moe``        the same with the SP-MoE branch only
``bilstm_text``   :class:`BiLSTMText`
``cnn_speech``    :class:`CNNSpeech`
``mlp_graph``     :class:`MLPGraph` (GAT graph embedding -> MLP)
``early_fusion``  :class:`EarlyFusion`
``late_fusion``   :class:`LateFusion`
================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from .base import EmotionModel, FusionOutput
from .baselines import BiLSTMText, CNNSpeech, EarlyFusion, LateFusion, MLPGraph
from .batch import FusionBatch, UtteranceFeatures, collate, utterance_edges
from .config import BRANCH_NAMES, ConfigLike, FusionConfig
from .fusion import ClassWiseLateFusion, ComplementaryFusion, fusion_loss
from .graph import TimeAlignedGAT, batch_edges, time_aligned_edges, timed_word_spans, word_char_spans
from .moe import CAMoE, CrossAttentionExpert, SPMoE, SumProductExpert, TopKGate

ModelFactory = Callable[[FusionConfig], EmotionModel]


def _branches(*branches: str) -> ModelFactory:
    return lambda config: ComplementaryFusion(config.replace(branches=branches))


MODELS: dict[str, ModelFactory] = {
    "proposed": ComplementaryFusion,
    "ca_moe": _branches("ca"),
    "sp_moe": _branches("sp"),
    "bilstm_text": BiLSTMText,
    "cnn_speech": CNNSpeech,
    "mlp_graph": MLPGraph,
    "early_fusion": EarlyFusion,
    "late_fusion": LateFusion,
}


def build_model(name: str, config: ConfigLike = None) -> EmotionModel:
    """A fresh model of the registry; ``config`` is a :class:`FusionConfig`, its ``to_dict()`` or
    None (defaults).  The model keeps ``model.config`` and ``model.registry_name`` for checkpoints."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
    model = factory(FusionConfig.coerce(config))
    model.registry_name = name
    return model


__all__ = [
    "BRANCH_NAMES",
    "MODELS",
    "BiLSTMText",
    "CAMoE",
    "CNNSpeech",
    "ClassWiseLateFusion",
    "ComplementaryFusion",
    "CrossAttentionExpert",
    "EarlyFusion",
    "EmotionModel",
    "FusionBatch",
    "FusionConfig",
    "FusionOutput",
    "LateFusion",
    "MLPGraph",
    "SPMoE",
    "SumProductExpert",
    "TimeAlignedGAT",
    "TopKGate",
    "UtteranceFeatures",
    "batch_edges",
    "build_model",
    "collate",
    "fusion_loss",
    "time_aligned_edges",
    "timed_word_spans",
    "utterance_edges",
    "word_char_spans",
]
