"""Audio helpers shared by the encoders and the bundle's assembly checks."""

from __future__ import annotations

import numpy as np

from shared.audio import SAMPLE_RATE, resample


def to_mono_16k(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """A 1-D float32 waveform at 16 kHz (channels averaged; :func:`training.data.audio.resample`).

    ``waveform`` may be ``[T]``, ``[T, C]`` or ``[C, T]`` (the longer axis is time); integer PCM is
    scaled to [-1, 1].
    """
    x = np.asarray(waveform)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
    elif x.ndim != 1:
        raise ValueError(f"waveform must be 1-D or 2-D, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if sample_rate != SAMPLE_RATE and x.size:
        x = resample(x, int(sample_rate), SAMPLE_RATE)
    return np.ascontiguousarray(x)


def synthetic_speech(seconds: float, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic speech-like test signal: voiced harmonic stacks with a gliding pitch,
    syllable-rate amplitude modulation and noise bursts (fricatives), peak about 0.5."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    f0 = 120.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t) + 15.0 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum((0.6 / k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 12))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t - np.pi / 2)) ** 2
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t) > 0.6) * 0.15
    x = voiced * syllables + noise
    return (0.5 * x / max(np.abs(x).max(), 1e-9)).astype(np.float32)
