"""The proposed model: shared time-aligned GAT + CA-MoE + SP-MoE + class-wise late fusion.

``ComplementaryFusion(config)`` builds the branches named in ``config.branches`` (``("ca", "sp")``
for the proposed model, ``("ca",)`` / ``("sp",)`` for the single-branch rows of the comparison
table).  Two entry points:

* ``model(batch) -> FusionOutput``: a :class:`~training.models.batch.FusionBatch` (or a mapping of
  its tensors); runs the GAT unless ``batch.graph`` already holds graph embeddings;
* ``model.fuse(text, text_mask, speech, speech_mask, graph) -> FusionOutput``: plain tensors with a
  precomputed graph embedding (the serving path: the graph service publishes it on
  ``features.graph``); ``model.gat(text, text_mask, speech, speech_mask, edge_index)`` computes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .base import EmotionModel, FusionOutput
from .batch import FusionBatch
from .config import BRANCH_NAMES, ConfigLike, FusionConfig
from .graph import TimeAlignedGAT
from .layers import clean_padding
from .moe import CAMoE, SPMoE
from .voice_stats import VoiceStats

__all__ = ["BRANCH_NAMES", "ClassWiseLateFusion", "ComplementaryFusion", "FusionConfig", "fusion_loss"]


class ClassWiseLateFusion(nn.Module):
    """Learnable per-class mixing of the branches' log-probabilities.

    ``fused[:, c] = sum_b alpha[b, c] * log_softmax(z_b)[:, c]`` with ``alpha[:, c]`` a softmax over
    branches of a learnable ``mix[:, c]`` (a class-wise weighted product of the branches' experts
    opinions; ``softmax(fused)`` is the fused distribution).  Initialised so that each branch has
    weight ``favour`` on its favoured classes (CA-MoE: fear, sadness; SP-MoE: anger, happiness) and
    equal weights elsewhere.  With a single branch the fusion is the identity on its distribution.
    """

    def __init__(
        self,
        branches: Sequence[str],
        class_names: Sequence[str],
        favoured: Mapping[str, Sequence[str]] | None = None,
        favour: float = 0.75,
    ) -> None:
        super().__init__()
        self.branches = tuple(branches)
        index = {name: i for i, name in enumerate(class_names)}
        mix = torch.zeros(len(self.branches), len(index))
        if len(self.branches) > 1:
            # softmax([x, 0, ..., 0]) = favour for the favoured branch
            x = math.log(favour * (len(self.branches) - 1) / (1 - favour))
            for b, branch in enumerate(self.branches):
                for name in (favoured or {}).get(branch, ()):
                    mix[b, index[name]] += x
        if len(self.branches) > 1:
            self.mix = nn.Parameter(mix)
        else:  # nothing to learn: a single branch always has weight 1
            self.register_buffer("mix", mix)

    def weights(self) -> Tensor:
        """``[n_branches, n_classes]`` mixing weights (columns sum to 1)."""
        return torch.softmax(self.mix, 0)

    def forward(self, branch_logits: Sequence[Tensor]) -> Tensor:
        log_probs = torch.stack([torch.log_softmax(z, -1) for z in branch_logits])  # [n_branches, B, C]
        return (self.weights().unsqueeze(1) * log_probs).sum(0)


class ComplementaryFusion(EmotionModel):
    """The paper's complementary fusion framework (see the module docstring)."""

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        c = self.config
        self.gat = TimeAlignedGAT.from_config(c)
        dims = dict(
            d_text=c.d_text,
            d_speech=c.d_speech,
            d_graph=c.d_graph,
            d_model=c.d_model,
            n_experts=c.n_experts,
            n_classes=c.n_classes,
            dropout=c.dropout,
            gate_noise=c.gate_noise,
        )
        branches: dict[str, nn.Module] = {}
        if "ca" in c.branches:
            branches["ca_moe"] = CAMoE(**dims, k=c.ca_top_k, n_heads=c.n_heads, ffn_mult=c.ffn_mult)
        if "sp" in c.branches:
            branches["sp_moe"] = SPMoE(**dims, k=c.sp_top_k, speech_pooling=c.speech_pooling)
        if "vs" in c.branches:
            branches["voice_stats"] = VoiceStats(c.d_speech, c.n_classes, c.dropout)
        self.branches = nn.ModuleDict(branches)
        self.late_fusion = ClassWiseLateFusion(
            list(self.branches),
            c.class_names,
            {BRANCH_NAMES[k]: v for k, v in c.favoured_classes.items()},
            c.favour,
        )

    @torch.no_grad()
    def fit_voice_scaler(self, batches: Iterable[FusionBatch]) -> int:
        """Fit the voice-statistics branch's standardisation (when the model has one) on the
        training ``batches``, their frames normalised per speaker as the model sees them; returns
        how many utterances with speech it read (0 without the branch)."""
        branch = self.branches["voice_stats"] if "voice_stats" in self.branches else None
        if branch is None:
            return 0
        parts = []
        for batch in batches:
            batch = self.normalise_speakers(batch)
            speech, speech_mask = clean_padding(batch.speech, batch.speech_mask)
            parts.append(branch.statistics(speech, speech_mask)[speech_mask.any(1)])
        stats = torch.cat(parts)
        branch.fit_scaler(stats)
        return len(stats)

    def predict(self, batch: FusionBatch) -> FusionOutput:
        graph = batch.graph_embedding(self.gat)
        return self.fuse(batch.text, batch.text_mask, batch.speech, batch.speech_mask, graph)

    def fuse(self, text: Tensor, text_mask: Tensor, speech: Tensor, speech_mask: Tensor, graph: Tensor) -> FusionOutput:
        """Late fusion of the MoE branches given the graph embedding ``[B, d_graph]``.

        Padding is trimmed and zeroed once here (so the output never depends on it, NaN included)
        and the cleaned tensors are shared by the branches."""
        text, text_mask = clean_padding(text, text_mask)
        speech, speech_mask = clean_padding(speech, speech_mask)
        outs = {name: branch(text, text_mask, speech, speech_mask, graph) for name, branch in self.branches.items()}
        logits = self.late_fusion([o.logits for o in outs.values()])
        return FusionOutput.from_logits(
            logits,
            branch_logits={name: o.logits for name, o in outs.items()},
            aux_loss=torch.stack([o.aux_loss for o in outs.values()]).sum(),
            graph=graph,
            expert_weights={name: o.gate.combine for name, o in outs.items()},
        )


def fusion_loss(
    output: FusionOutput,
    labels: Tensor,
    aux_weight: float = 0.01,
    branch_weight: float = 0.5,
    class_weights: Tensor | None = None,
) -> Tensor:
    """Training objective: ``CE(fused) + branch_weight * mean_b CE(branch_b) + aux_weight * aux``.

    The per-branch term keeps each branch a classifier on its own (so the late fusion mixes two
    meaningful opinions); ``FusionConfig.aux_loss_weight`` / ``branch_loss_weight`` hold the defaults
    a training loop should pass.  Works for every registered model (baselines: empty branches or
    per-modality branches, zero aux loss).
    """
    ce = nn.functional.cross_entropy
    loss = ce(output.logits, labels, weight=class_weights)
    if branch_weight and output.branch_logits:
        branch = [ce(z, labels, weight=class_weights) for z in output.branch_logits.values()]
        loss = loss + branch_weight * torch.stack(branch).mean()
    return loss + aux_weight * output.aux_loss
