"""Audio I/O and small signal utilities for the datasets.

* :func:`load_audio` reads WAV/FLAC/OGG through ``soundfile`` (8-bit unsigned, 16/24/32-bit PCM,
  float, any channel count, any sample rate) and returns mono float32 at the requested rate.
* :func:`resample` is a polyphase FIR resampler (Kaiser-windowed sinc, the same design as
  ``scipy.signal.resample_poly``); it uses SciPy when it is importable and an equivalent NumPy
  implementation otherwise.
* :func:`write_wav` writes 16-bit PCM; :func:`estimate_f0` (YIN) and :func:`active_rms_db` are the
  measurements the synthetic-corpus summary and the tests use; :func:`normalise_level` brings an
  utterance to a set active speech level (what the speech encoder hears, whatever the line's gain).
"""

from __future__ import annotations

from functools import cache
from math import gcd
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view

from shared.prosody import yin

__all__ = [
    "AudioError",
    "active_rms_db",
    "estimate_f0",
    "load_audio",
    "normalise_level",
    "read_audio",
    "resample",
    "write_wav",
]

ResampleBackend = Literal["auto", "scipy", "numpy"]

_KAISER_BETA = 5.0
_HALF_LEN_FACTOR = 10  # filter half-length per unit of max(up, down), as resample_poly


class AudioError(Exception):
    """An audio file is missing, unreadable, corrupt, empty or holds non-finite samples."""


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The file's samples as float32 ``[frames, channels]`` in [-1, 1], and its sample rate."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: audio file not found")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{p}: cannot decode audio ({e})") from e
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{p}: audio file holds no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{p}: audio holds NaN or infinite samples")
    return data, int(sr)


def load_audio(
    path: str | Path, target_sr: int | None = 16_000, *, backend: ResampleBackend = "auto"
) -> np.ndarray:
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


# ---- resampling --------------------------------------------------------------------------------


def resample(
    x: np.ndarray, orig_sr: int, target_sr: int, *, backend: ResampleBackend = "auto"
) -> np.ndarray:
    """Resample 1-D ``x`` from ``orig_sr`` to ``target_sr`` with a polyphase anti-aliasing FIR.

    The output has ``ceil(len(x) * target_sr / orig_sr)`` samples and float32 dtype. ``backend``
    ``"auto"`` uses ``scipy.signal.resample_poly`` when SciPy is installed, else the NumPy
    implementation (same filter, same alignment; results agree to float rounding).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D signal, got shape {x.shape}")
    g = gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // g, int(orig_sr) // g
    if up == down or x.size == 0:
        return x.copy()
    if backend in ("auto", "scipy"):
        try:
            from scipy.signal import resample_poly
        except ImportError:
            if backend == "scipy":
                raise
        else:
            return resample_poly(x, up, down).astype(np.float32, copy=False)
    return _resample_poly_numpy(x, up, down)


def _lowpass_taps(up: int, down: int) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc, cutoff at the lower Nyquist, DC gain ``up`` (resample_poly's design)."""
    max_rate = max(up, down)
    half_len = _HALF_LEN_FACTOR * max_rate
    n_taps = 2 * half_len + 1
    cutoff = 1.0 / max_rate  # in units of the upsampled Nyquist frequency
    m = np.arange(n_taps, dtype=np.float64) - half_len
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(n_taps, _KAISER_BETA)
    return h * (up / h.sum()), half_len


@cache
def _polyphase_bank(up: int, down: int) -> tuple[np.ndarray, int, int]:
    """``(bank [up, taps], taps, half_len)`` with ``bank[p, k] = h[p + up*(taps-1-k)]``
    (each phase's taps, reversed so that a window of the input can be dotted with them)."""
    h, half_len = _lowpass_taps(up, down)
    n_taps = -(-h.size // up)
    padded = np.zeros(n_taps * up)
    padded[: h.size] = h
    bank = padded.reshape(n_taps, up).T[:, ::-1]
    return np.ascontiguousarray(bank), n_taps, half_len


def _resample_poly_numpy(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Polyphase upsample-filter-downsample, computing only the kept output samples.

    Output ``m`` is the filtered upsampled signal at ``t = m*down + half_len`` (the filter's
    centre, so no delay): ``sum_i h[t % up + up*i] * x[t // up - i]``. Outputs ``m = r + up*j``
    share one phase and read input windows ``down`` apart, so each of the ``up`` residues is one
    matrix-vector product over a strided sliding-window view (no gathers, no copies).
    """
    bank, n_taps, half_len = _polyphase_bank(up, down)
    n_out = -(-x.size * up // down)
    back = half_len // up + n_taps + down + 2  # zeros so that no window runs off the end
    xpad = np.concatenate([np.zeros(n_taps), x.astype(np.float64), np.zeros(back)])
    windows = sliding_window_view(xpad, n_taps)  # windows[s, k] = xpad[s + k]
    out = np.empty(n_out, dtype=np.float32)
    for r in range(min(up, n_out)):
        t0 = r * down + half_len
        n_j = len(range(r, n_out, up))
        first = t0 // up + 1  # window whose last sample is x[t0 // up]
        rows = windows[first : first + (n_j - 1) * down + 1 : down]
        out[r::up] = rows @ bank[t0 % up]
    return out


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


def normalise_level(
    x: np.ndarray, sample_rate: int, target_dbfs: float, *, max_gain_db: float = 40.0
) -> np.ndarray:
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
