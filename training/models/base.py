"""``EmotionModel``, the common base (one forward signature for all models), and ``FusionOutput``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .batch import FusionBatch
from .config import ConfigLike, FusionConfig
from .layers import SpeakerNormalisation


@dataclass
class FusionOutput:
    """What every model returns (also readable as a dict: ``out["probs"]``)."""

    logits: Tensor
    """``[B, C]``: train with cross-entropy on these; ``probs = softmax(logits)``."""
    probs: Tensor
    """``[B, C]``, rows sum to 1."""
    branch_logits: dict[str, Tensor] = field(default_factory=dict)
    """Per branch ``[B, C]`` (``"ca_moe"``, ``"sp_moe"`` for the proposed model; per modality for
    the late-fusion baseline; empty for single-path baselines)."""
    aux_loss: Tensor = field(default_factory=lambda: torch.zeros(()))
    """Scalar: the experts' load-balancing loss summed over branches (0 without experts)."""
    graph: Tensor | None = None
    """``[B, d_graph]`` graph embedding used (models with a GAT)."""
    expert_weights: dict[str, Tensor] = field(default_factory=dict)
    """Per MoE branch, the gate's combine weights ``[B, n_experts]`` (zero outside the top-k)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @classmethod
    def from_logits(cls, logits: Tensor, **kwargs: Any) -> FusionOutput:
        return cls(logits=logits, probs=torch.softmax(logits, -1), **kwargs)


class EmotionModel(nn.Module):
    """Base of every registered model: ``forward(batch) -> FusionOutput``.

    ``batch`` is a :class:`FusionBatch` or a mapping of tensors / numpy arrays with its keys, so
    one training loop (and one serving wrapper) drives the proposed model and all baselines.
    """

    config: FusionConfig
    registry_name: str | None = None
    """Set by :func:`training.models.build_model` (the name to rebuild it from a checkpoint)."""

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__()
        self.config = FusionConfig.coerce(config)
        self.speaker_norm = (
            SpeakerNormalisation(self.config.d_speech, self.config.speaker_prior_weight)
            if self.config.speaker_norm
            else None
        )

    @classmethod
    def from_config(cls, config: ConfigLike = None) -> EmotionModel:
        return cls(FusionConfig.coerce(config))

    def forward(self, batch: FusionBatch | Mapping[str, Any]) -> FusionOutput:
        return self.predict(self.normalise_speakers(FusionBatch.coerce(batch)))

    def time_aligned_graph(self, batch: FusionBatch | Mapping[str, Any]) -> Tensor:
        """The graph embedding ``[B, d_graph]`` of this model's GAT, on the frames as :meth:`forward`
        sees them (what the served ``graph_gat`` model computes)."""
        gat = getattr(self, "gat", None)
        if gat is None:
            raise ValueError(f"{type(self).__name__} has no time-aligned GAT")
        return self.normalise_speakers(FusionBatch.coerce(batch)).graph_embedding(gat)

    def normalise_speakers(self, batch: FusionBatch) -> FusionBatch:
        """The batch with its speech frames judged against each speaker's baseline
        (``config.speaker_norm``; unchanged otherwise). Every path into the model's speech layers
        goes through it: :meth:`forward` and the served GAT."""
        if self.speaker_norm is None:
            return batch
        speech = self.speaker_norm(
            batch.speech, batch.speech_mask, batch.speaker_count, batch.speaker_mean, batch.speaker_var
        )
        return batch.with_speech(speech)

    def predict(self, batch: FusionBatch) -> FusionOutput:  # pragma: no cover - abstract
        raise NotImplementedError
