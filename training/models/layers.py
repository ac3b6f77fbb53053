"""Small building blocks shared by every model: masked pooling, padding handling, projections, heads.

Masks follow the encoders' convention: ``True`` marks a real token/frame, ``False`` padding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
    if trim and x.shape[1] > 1:
        valid = mask.any(0).nonzero()
        length = int(valid.max()) + 1 if valid.numel() else 1
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
    """Utterance vector of one modality: masked mean of the hidden states, then :class:`Projection`.

    The linear layer runs once per utterance on the pooled states, which equals pooling its
    per-position outputs (a mean commutes with an affine map) at a fraction of the cost; the
    LayerNorm then normalises the utterance vector.  A missing modality (all-padding mask) gives
    zeros.  Padded positions must be finite (see :func:`masked_mean`).
    """

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = Projection(d_in, d_out, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.proj(masked_mean(x, mask)) * present(mask)


class MLPHead(nn.Sequential):
    """Classifier head: ``LayerNorm -> Dropout -> Linear`` or, with ``hidden``,
    ``Linear -> GELU -> Dropout -> Linear``."""

    def __init__(self, d_in: int, n_out: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        if hidden is None:
            super().__init__(nn.LayerNorm(d_in), nn.Dropout(dropout), nn.Linear(d_in, n_out))
        else:
            super().__init__(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))
