"""Per-speaker normalisation of utterance features (z-scores against the speaker's own statistics).

Emotion moves prosody *relative to a speaker's baseline*: a deep voice raised in anger can sit
below a high voice at rest. Z-scoring each feature against the speaker removes the baseline.

* :func:`normalise_per_speaker` -- offline: every speaker's mean and SD over all of their
  utterances (a corpus, or a finished call).
* :class:`OnlineSpeakerNormaliser` -- streaming: utterance ``k`` of a speaker is normalised with the
  statistics of utterances ``0 .. k-1`` only, shrunk towards a :class:`FeaturePrior` fitted on other
  speakers: ``mean = (n m + k0 mu0) / (n + k0)``, ``var = (n v + k0 s0^2) / (n + k0)`` with ``n``
  utterances seen, their mean ``m`` and variance ``v``, and ``k0`` = ``prior_weight`` pseudo-utterances.
  The first utterance uses the prior alone. No utterance sees itself or anything later, as in a live
  call, whose emotions are not balanced.
* :class:`FrameStatistics` -- the same idea for the speech branch's frames: the count, sum and sum
  of squares of a speaker's encoder frames over some of their utterances (additive, so a call's
  running baseline is a sum of its utterances' statistics, and a replayed utterance adds nothing
  new). The blending with a prior and the z-scores happen inside the trained model
  (``training.models.layers.SpeakerNormalisation``); this class is what the services and training
  compute and send it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FeaturePrior", "FrameStatistics", "OnlineSpeakerNormaliser", "normalise_per_speaker"]

_TINY = 1e-12


def _z(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``(x - mean) / sqrt(var)``, 0 where the variance is 0 (a constant feature)."""
    sd = np.sqrt(np.maximum(var, 0.0))
    return np.where(sd > _TINY, (x - mean) / np.maximum(sd, _TINY), 0.0)


@dataclass(frozen=True)
class FeaturePrior:
    """What a speaker is expected to look like before any of their utterances is seen."""

    mean: np.ndarray
    """Mean of the speakers' means, ``[features]``."""
    var: np.ndarray
    """Pooled *within*-speaker variance, ``[features]``: the spread of one speaker's utterances (the
    spread between speakers is what the normalisation removes)."""

    @classmethod
    def fit(cls, features: np.ndarray, speakers: Sequence[str]) -> FeaturePrior:
        """From ``features`` ``[utterances, features]`` of several speakers (``speakers[i]`` for row ``i``)."""
        x = np.asarray(features, dtype=np.float64)
        spk = np.asarray(speakers)
        if x.ndim != 2 or x.shape[0] != spk.size or spk.size == 0:
            raise ValueError(f"need [utterances, features] and one speaker per utterance, got {x.shape}, {spk.size}")
        means, sq_dev, dof = [], np.zeros(x.shape[1]), 0
        for s in np.unique(spk):
            rows = x[spk == s]
            means.append(rows.mean(axis=0))
            sq_dev += ((rows - rows.mean(axis=0)) ** 2).sum(axis=0)
            dof += rows.shape[0] - 1
        var = sq_dev / dof if dof > 0 else x.var(axis=0)
        return cls(np.mean(means, axis=0), var)


def normalise_per_speaker(features: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
    """Offline: each row z-scored with its speaker's mean and SD over all of that speaker's rows."""
    x = np.asarray(features, dtype=np.float64)
    spk = np.asarray(speakers)
    if x.ndim != 2 or x.shape[0] != spk.size:
        raise ValueError(f"need [utterances, features] and one speaker per utterance, got {x.shape}, {spk.size}")
    out = np.empty_like(x)
    for s in np.unique(spk):
        rows = spk == s
        out[rows] = _z(x[rows], x[rows].mean(axis=0), x[rows].var(axis=0))
    return out


class OnlineSpeakerNormaliser:
    """One speaker's running statistics (Welford), shrunk towards ``prior`` by ``prior_weight``."""

    def __init__(self, prior: FeaturePrior, prior_weight: float = 8.0) -> None:
        if prior_weight <= 0:
            raise ValueError(f"prior_weight must be positive, got {prior_weight}")
        self.prior = prior
        self.prior_weight = float(prior_weight)
        self.n = 0
        self._mean = np.zeros_like(prior.mean, dtype=np.float64)
        self._m2 = np.zeros_like(prior.mean, dtype=np.float64)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The blended ``(mean, variance)`` the next utterance will be normalised with."""
        n, k0 = self.n, self.prior_weight
        var = self._m2 / n if n else np.zeros_like(self._m2)
        mean = (n * self._mean + k0 * self.prior.mean) / (n + k0)
        return mean, (n * var + k0 * self.prior.var) / (n + k0)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """``x`` z-scored with the statistics of the utterances seen so far (``x`` itself excluded)."""
        mean, var = self.statistics()
        return _z(np.asarray(x, dtype=np.float64), mean, var)

    def update(self, x: np.ndarray) -> None:
        """Add one utterance's features to the speaker's statistics."""
        x = np.asarray(x, dtype=np.float64)
        self.n += 1
        delta = x - self._mean
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """:meth:`normalise`, then :meth:`update`: the streaming step."""
        z = self.normalise(x)
        self.update(x)
        return z


@dataclass(frozen=True)
class FrameStatistics:
    """Sufficient statistics of a speaker's frames over some of their utterances.

    ``utterances`` counts the utterances with at least one frame; ``frames`` their frames; ``total``
    and ``squares`` the per-dimension sums of the frames and of their squares (float64, ``[dim]``).
    Add two with ``+``; :meth:`mean_var` gives the pooled frame mean and variance."""

    utterances: int
    frames: int
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> FrameStatistics:
        return cls(0, 0, np.zeros(dim), np.zeros(dim))

    @classmethod
    def of_utterance(cls, frames: np.ndarray, mask: np.ndarray) -> FrameStatistics:
        """One utterance's statistics from its ``[F, dim]`` frames and ``[F]`` mask (only the masked
        frames count; an utterance without a frame counts as no utterance)."""
        f = np.asarray(frames, dtype=np.float64)
        m = np.asarray(mask, dtype=bool)
        if f.ndim != 2 or m.shape != f.shape[:1]:
            raise ValueError(f"need [frames, dim] frames and a [frames] mask, got {f.shape} and {m.shape}")
        real = f[m]
        return cls(int(real.shape[0] > 0), int(real.shape[0]), real.sum(axis=0), (real * real).sum(axis=0))

    def __add__(self, other: FrameStatistics) -> FrameStatistics:
        return FrameStatistics(
            self.utterances + other.utterances,
            self.frames + other.frames,
            self.total + other.total,
            self.squares + other.squares,
        )

    @classmethod
    def sum(cls, items: Sequence[FrameStatistics], dim: int) -> FrameStatistics:
        out = cls.empty(dim)
        for item in items:
            out = out + item
        return out

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        """Pooled frame mean and (population) variance, float64 ``[dim]`` each; zeros without frames."""
        if self.frames == 0:
            return np.zeros_like(self.total), np.zeros_like(self.total)
        mean = self.total / self.frames
        return mean, np.maximum(self.squares / self.frames - mean * mean, 0.0)

    def to_bytes(self) -> bytes:
        """``utterances``, ``frames`` (int64) then ``total`` and ``squares`` (float32: 4 KB for 512
        dimensions; one utterance's sums need no more), little-endian."""
        head = np.array([self.utterances, self.frames], "<i8").tobytes()
        return head + np.concatenate([self.total, self.squares]).astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> FrameStatistics:
        if len(raw) < 16 or (len(raw) - 16) % 8:
            raise ValueError(f"frame statistics need 16 + 8 * dim bytes, got {len(raw)}")
        utterances, frames = (int(v) for v in np.frombuffer(raw[:16], "<i8"))
        values = np.frombuffer(raw[16:], "<f4").astype(np.float64)
        dim = values.size // 2
        return cls(utterances, frames, values[:dim].copy(), values[dim:].copy())
