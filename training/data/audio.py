"""Audio I/O and small signal utilities for the datasets (decoding and resampling themselves are
:mod:`shared.audio`'s, which the services use too).

* :func:`load_audio` reads WAV/FLAC/OGG (:func:`shared.audio.read_audio`) and returns mono float32
  at the requested rate (:func:`shared.audio.resample`).
* :func:`write_wav` writes 16-bit PCM; :func:`estimate_f0` (YIN) and :func:`active_rms_db` are the
  measurements the synthetic-corpus summary and the tests use; :func:`normalise_level` brings an
  utterance to a set active speech level (what the speech encoder hears, whatever the line's gain).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from shared.audio import ResampleBackend, read_audio, resample
from shared.prosody import yin

__all__ = ["active_rms_db", "estimate_f0", "load_audio", "normalise_level", "write_wav"]


def load_audio(path: str | Path, target_sr: int | None = 16_000, *, backend: ResampleBackend = "auto") -> np.ndarray:
    """Mono float32 samples of ``path`` at ``target_sr`` (``None`` keeps the file's rate).

    Channels are averaged; integer PCM (8-bit unsigned, 16, 24, 32-bit) and float files are all
    scaled to [-1, 1] by libsndfile. Raises :class:`AudioError` for missing, corrupt or empty files.
    """
    data, sr = read_audio(path)
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if target_sr is not None and target_sr != sr:
        mono = resample(mono, sr, target_sr, backend=backend)
    return np.ascontiguousarray(mono, dtype=np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono ``samples`` (float, clipped to [-1, 1]) as 16-bit PCM WAV; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767.0)
    sf.write(str(p), pcm.astype(np.int16), int(sample_rate), subtype="PCM_16", format="WAV")
    return p


# ---- measurements ------------------------------------------------------------------------------


def active_rms_db(x: np.ndarray, sample_rate: int, *, floor_db: float = -35.0) -> float:
    """RMS level (dBFS) of the active part of ``x``: 20 ms frames within ``floor_db`` of the loudest.

    Pauses and leading/trailing silence do not dilute the level, which makes it a fair loudness
    measure across speaking rates. Returns ``-inf`` for an all-zero signal.
    """
    x = np.asarray(x, dtype=np.float64)
    n = max(1, int(0.02 * sample_rate))
    frames = x[: x.size // n * n].reshape(-1, n) if x.size >= n else x[None, :]
    power = np.mean(frames**2, axis=1)
    if power.max() <= 0:
        return float("-inf")
    active = power[power >= power.max() * 10 ** (floor_db / 10)]
    return float(10 * np.log10(active.mean()))


def normalise_level(x: np.ndarray, sample_rate: int, target_dbfs: float, *, max_gain_db: float = 40.0) -> np.ndarray:
    """``x`` (float32) scaled so that its active speech level (:func:`active_rms_db`) is
    ``target_dbfs``, with at most ``max_gain_db`` of gain or attenuation (a near-silent clip is not
    raised into loud noise). All-zero audio comes back unchanged. ITU-T P.56 puts telephone speech
    at -26 dBov, the default of ``models.speech_level_dbfs``."""
    x = np.asarray(x, np.float32)
    level = active_rms_db(x, sample_rate)
    if not np.isfinite(level):
        return x
    gain_db = float(np.clip(target_dbfs - level, -max_gain_db, max_gain_db))
    return x * np.float32(10 ** (gain_db / 20))


def estimate_f0(
    x: np.ndarray,
    sample_rate: int,
    *,
    fmin: float = 60.0,
    fmax: float = 500.0,
    frame_s: float = 0.04,
    hop_s: float = 0.01,
    threshold: float = 0.2,
    silence_db: float = -30.0,
) -> np.ndarray:
    """Per-frame fundamental frequency in Hz by YIN (de Cheveigné & Kawahara 2002); 0 = unvoiced.

    Frames start every ``hop_s`` (not centred); the vectorised YIN core is
    :func:`shared.prosody.yin` (the first dip below ``threshold``, parabolic interpolation).
    Frames quieter than ``silence_db`` relative to the loudest are unvoiced. Works on
    band-limited telephone speech too (periodicity survives a missing fundamental).
    """
    x = np.asarray(x, dtype=np.float64)
    win = int(frame_s * sample_rate)
    hop = max(1, int(hop_s * sample_rate))
    tau_max = int(sample_rate / fmin)
    tau_min = max(2, int(sample_rate / fmax))
    if x.size < win + tau_max + 1:
        return np.zeros(0)
    n_frames = 1 + (x.size - win - tau_max) // hop
    idx = np.arange(n_frames)[:, None] * hop + np.arange(win + tau_max)[None, :]
    est = yin(x[idx], win, tau_min, tau_max, threshold)
    f0 = np.where(est.period > 0, sample_rate / np.maximum(est.period, 1e-12), 0.0)
    level = est.energy / win
    loud = level >= level.max() * 10 ** (silence_db / 10) if level.max() > 0 else level > 0
    return np.where(loud, f0, 0.0)
