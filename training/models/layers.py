"""Small building blocks shared by every model: masked pooling, padding handling, projections, heads.

Masks follow the encoders' convention: ``True`` marks a real token/frame, ``False`` padding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


POOLINGS = ("mean", "mean+std")
"""How :class:`PooledProjection` turns frames into an utterance vector."""


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x [B, L, D]`` over the positions where ``mask [B, L]`` is True -> ``[B, D]``;
    a row without any valid position pools to zeros.

    Computed as one batched matrix product with weights ``mask / count`` (several times faster
    than masking ``x``): padded positions contribute ``0 * value``, exactly 0 for any finite value.
    Non-finite padding must be removed first (:func:`clean_padding`, which every model applies at
    its entry).
    """
    weights = mask.to(x.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    return torch.bmm(weights.unsqueeze(1), x).squeeze(1)


def masked_mean_std(x: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """Statistics pooling: ``[mean; SD]`` of ``x [B, L, D]`` over the valid positions -> ``[B, 2D]``
    (the x-vector / ECAPA utterance statistics). How much a voice varies over an utterance -- pitch
    and level movement, tremor -- is what separates many emotions, and a mean alone drops it. The
    SD is ``sqrt(var + eps)``, so its gradient stays finite on constant input; a row without any
    valid position pools to zeros for the mean and ``sqrt(eps)`` for the SD (callers mask a missing
    modality, see :class:`PooledProjection`)."""
    mean = masked_mean(x, mask)
    var = (masked_mean(x * x, mask) - mean * mean).clamp_min(0.0)
    return torch.cat([mean, torch.sqrt(var + eps)], -1)


def present(mask: Tensor) -> Tensor:
    """``[B, 1]`` float: 1 where the utterance has any valid position (the modality is present)."""
    return mask.any(1, keepdim=True).to(torch.get_default_dtype())


def clean_padding(x: Tensor, mask: Tensor, trim: bool = True, zero: bool = True) -> tuple[Tensor, Tensor]:
    """With ``trim``, drop the trailing positions of ``x [B, L, D]`` that are padding in every
    utterance of the batch (at least one position is kept); with ``zero``, set the remaining padded
    positions to 0.

    After ``zero`` the result no longer depends on what the padding held (NaN and inf included),
    so models built on it give the same output whatever the padding holds.  Trimming is free (a
    view) and saves compute: 128-token windows usually hold a few dozen real tokens.
    """
    mask = mask.bool()
    if trim and x.shape[1]:
        # the last position valid in any utterance, as a size (exportable: no Python branch on data)
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        length = (mask.any(0).long() * positions).amax(0).clamp_min(1).item()
        torch._check(length >= 1)
        torch._check(length <= x.shape[1])
        x, mask = x[:, :length], mask[:, :length]
    if zero:
        x = torch.where(mask.unsqueeze(-1), x, 0.0)
    return x, mask


class Projection(nn.Sequential):
    """``Linear(d_in, d_out) -> LayerNorm -> Dropout`` over the last dimension (any leading shape):
    the shared projection of encoder hidden states (or graph embeddings) into a model width."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.1) -> None:
        super().__init__(nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.Dropout(dropout))


class PooledProjection(nn.Module):
    """Utterance vector of one modality: pooled hidden states, then :class:`Projection`.

    ``pooling="mean"``: the masked mean (the linear layer then runs once per utterance, which
    equals pooling its per-position outputs -- a mean commutes with an affine map -- at a fraction
    of the cost); ``"mean+std"``: :func:`masked_mean_std` statistics pooling, twice the input
    width.  The LayerNorm then normalises the utterance vector.  A missing modality (all-padding
    mask) gives zeros.  Padded positions must be finite (see :func:`masked_mean`).
    """

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.1, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} must be one of {POOLINGS}")
        self.pooling = pooling
        self.proj = Projection(d_in * (2 if pooling == "mean+std" else 1), d_out, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        pooled = masked_mean(x, mask) if self.pooling == "mean" else masked_mean_std(x, mask)
        return self.proj(pooled) * present(mask)


class MLPHead(nn.Sequential):
    """Classifier head: ``LayerNorm -> Dropout -> Linear`` or, with ``hidden``,
    ``Linear -> GELU -> Dropout -> Linear``."""

    def __init__(self, d_in: int, n_out: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        if hidden is None:
            super().__init__(nn.LayerNorm(d_in), nn.Dropout(dropout), nn.Linear(d_in, n_out))
        else:
            super().__init__(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))


class SpeakerNormalisation(nn.Module):
    """Online per-speaker normalisation of the speech frames (the paper has none; see docs/training.md).

    Each utterance's frames are z-scored per dimension with its speaker's baseline blended with a
    prior: ``mean = (n m + k0 mu0) / (n + k0)``, ``var = (n v + k0 s0^2) / (n + k0)``, where ``n``
    is the number of the speaker's earlier utterances the baseline ``(m, v)`` pools
    (``FusionBatch.speaker_count``, 0 for a speaker's first utterance: the prior alone) and ``k0``
    is ``prior_weight``. The prior -- the mean of the training speakers' frame means and their
    pooled within-speaker frame variance -- is fitted once on the training set
    (:meth:`fit_prior`) and saved with the weights (buffers), so training, export and serving
    normalise alike. Padding stays zero.
    """

    def __init__(self, dim: int, prior_weight: float = 8.0, eps: float = 1e-5) -> None:
        super().__init__()
        if prior_weight <= 0:
            raise ValueError(f"prior_weight must be positive, got {prior_weight}")
        self.prior_weight, self.eps = float(prior_weight), float(eps)
        self.register_buffer("prior_mean", torch.zeros(dim))
        self.register_buffer("prior_var", torch.ones(dim))

    def fit_prior(self, mean: Tensor, var: Tensor) -> None:
        """Set the prior (``[dim]`` each): what a speaker is expected to sound like before any of
        their utterances is seen."""
        if mean.shape != self.prior_mean.shape or var.shape != self.prior_var.shape:
            raise ValueError(
                f"prior of shape {tuple(mean.shape)} / {tuple(var.shape)} for dim {self.prior_mean.numel()}"
            )
        self.prior_mean.copy_(mean.to(self.prior_mean))
        self.prior_var.copy_(var.to(self.prior_var).clamp_min(0.0))

    def forward(
        self, speech: Tensor, speech_mask: Tensor, count: Tensor | None, mean: Tensor | None, var: Tensor | None
    ) -> Tensor:
        """``speech [B, F, D]``, ``speech_mask [B, F]``, ``count [B]`` and ``mean``/``var`` ``[B, D]``
        (None: every utterance a speaker's first) -> the normalised frames ``[B, F, D]``."""
        k0 = self.prior_weight
        if count is None or mean is None or var is None:
            blended_mean = self.prior_mean.expand(speech.shape[0], -1)
            blended_var = self.prior_var.expand(speech.shape[0], -1)
        else:
            n = count.to(speech.dtype).clamp_min(0.0).unsqueeze(-1)
            blended_mean = (n * mean.to(speech.dtype) + k0 * self.prior_mean) / (n + k0)
            blended_var = (n * var.to(speech.dtype).clamp_min(0.0) + k0 * self.prior_var) / (n + k0)
        z = (speech - blended_mean.unsqueeze(1)) * torch.rsqrt(blended_var.unsqueeze(1) + self.eps)
        return torch.where(speech_mask.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))
