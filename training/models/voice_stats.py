"""The voice-statistics branch: a linear read-out of how the voice sits against its speaker.

Not in the paper. The speaker-independent probe of docs/training.md reads emotion from a speech
encoder layer's frames pooled to their mean and SD, z-scored against the speaker's earlier
utterances, with one logistic regression; on new RAVDESS actors at phone bandwidth it is about ten
points above the trained fusion model on the same frames. This branch is that read-out inside the
model: the speaker-normalised frames (``config.speaker_norm``) pooled to ``[mean; SD]``
(:func:`~training.models.layers.masked_mean_std`), standardised with the training set's statistics,
dropout, one linear layer. Few parameters
(``2 * d_speech * n_classes``), so it has little to overfit on a corpus of a few dozen speakers;
the class-wise late fusion weighs it against the two MoE branches per class.

An utterance without speech (a text-only line, or the speech dropped in training) gets zero
logits, a uniform distribution, which moves no class against another in the late fusion.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import masked_mean_std, present
from .moe import BranchOutput, GateOutput


class VoiceStats(nn.Module):
    """``[mean; SD]`` of the speech frames, standardised -> dropout -> linear -> logits ``[B, n_classes]``.

    The standardisation is the probe's: each of the ``2 * d_speech`` statistics is centred and
    scaled by its mean and SD over the training utterances (:meth:`fit_scaler`, buffers saved with
    the weights, so training, export and serving read alike). Without it the frame means of
    speaker-normalised frames vary little from one utterance to the next next to the SDs, and a
    linear layer trained at the recipe's learning rate barely reads them.
    """

    def __init__(self, d_speech: int, n_classes: int = 7, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("stats_mean", torch.zeros(2 * d_speech))
        self.register_buffer("stats_scale", torch.ones(2 * d_speech))
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(2 * d_speech, n_classes)

    @torch.no_grad()
    def fit_scaler(self, stats: Tensor) -> None:
        """Centre and scale from ``stats [N, 2 * d_speech]``: :meth:`statistics` of the training
        utterances that have speech."""
        if stats.ndim != 2 or stats.shape[1] != self.stats_mean.numel() or stats.shape[0] < 2:
            raise ValueError(f"need [N >= 2, {self.stats_mean.numel()}] statistics, got {tuple(stats.shape)}")
        stats = stats.to(self.stats_mean)
        self.stats_mean.copy_(stats.mean(0))
        self.stats_scale.copy_(stats.std(0).clamp_min(1e-3))

    def statistics(self, speech: Tensor, speech_mask: Tensor) -> Tensor:
        """``[B, 2 * d_speech]``: the frames' mean and SD, before the standardisation."""
        return masked_mean_std(speech, speech_mask)

    def forward(
        self, text: Tensor, text_mask: Tensor, speech: Tensor, speech_mask: Tensor, graph: Tensor
    ) -> BranchOutput:
        """The branches' common signature; reads the speech frames only."""
        stats = (self.statistics(speech, speech_mask) - self.stats_mean) / self.stats_scale
        logits = self.classify(self.dropout(stats)) * present(speech_mask)
        return BranchOutput(logits=logits, gate=_no_experts(logits))


def _no_experts(logits: Tensor) -> GateOutput:
    """A branch without experts: one "expert" that every utterance goes to, no balancing loss."""
    rows = logits.shape[0]
    ones = torch.ones((rows, 1), dtype=logits.dtype, device=logits.device)
    return GateOutput(
        combine=ones,
        indices=torch.zeros((rows, 1), dtype=torch.long, device=logits.device),
        probs=ones,
        aux_loss=logits.new_zeros(()),
    )
