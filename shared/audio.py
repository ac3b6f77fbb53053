"""Audio every layer reads: decoding a file, and the one resampling filter.

* :func:`read_audio` decodes a file through ``soundfile`` (8-bit unsigned, 16/24/32-bit PCM, float,
  any channel count and rate) to float32 ``[frames, channels]``; :class:`AudioError` says why not.
* :func:`resample` is a polyphase FIR resampler (Kaiser-windowed sinc, the design of
  ``scipy.signal.resample_poly``); it uses SciPy when it is importable and an equivalent NumPy
  implementation otherwise.
* :class:`StreamResampler` gives, chunk by chunk, exactly the 16 kHz samples one :func:`resample`
  of the whole stream gives (the ASR service's segmenter runs it on live calls).
"""

from __future__ import annotations

import math
from functools import cache
from math import gcd
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["SAMPLE_RATE", "AudioError", "StreamResampler", "read_audio", "resample"]

SAMPLE_RATE = 16_000
"""The rate the encoders, the VAD and the segmenter work at."""

ResampleBackend = Literal["auto", "scipy", "numpy"]

_KAISER_BETA = 5.0
FILTER_HALF_LEN = 10
"""Half-length of the resampling filter per unit of ``max(up, down)`` (as ``resample_poly``);
:class:`StreamResampler` holds back as many input samples as this filter reads."""


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


def resample(x: np.ndarray, orig_sr: int, target_sr: int, *, backend: ResampleBackend = "auto") -> np.ndarray:
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
    half_len = FILTER_HALF_LEN * max_rate
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


class StreamResampler:
    """:func:`resample` to 16 kHz over a stream of chunks.

    ``carry`` holds the last input samples (starting at an input index that is a multiple of the
    decimation factor, so that output samples line up with the one-shot ones), ``seen`` counts the
    input samples fed and ``emitted`` the output samples returned.
    """

    def __init__(self, orig_sr: int, carry: np.ndarray | None = None, seen: int = 0, emitted: int = 0):
        g = gcd(int(orig_sr), SAMPLE_RATE)
        self.orig_sr = int(orig_sr)
        self.up, self.down = SAMPLE_RATE // g, int(orig_sr) // g
        self.margin = math.ceil(FILTER_HALF_LEN * max(self.up, self.down) / self.up) + 1
        """Input samples on either side of an output sample that its filter reads."""
        self.carry = np.zeros(0, np.float32) if carry is None else np.asarray(carry, np.float32)
        self.seen = seen
        self.emitted = emitted

    @property
    def identity(self) -> bool:
        return self.up == self.down

    def _resample_carry(self, start: int, stop: int) -> np.ndarray:
        """Output samples ``[start, stop)`` computed from the carry."""
        origin = self.seen - self.carry.size
        offset = origin * self.up // self.down
        y = resample(self.carry, self.orig_sr, SAMPLE_RATE) if self.carry.size else np.zeros(0, np.float32)
        return y[start - offset : stop - offset]

    def feed(self, x: np.ndarray) -> np.ndarray:
        """The 16 kHz samples that ``x`` completes (the filter's look-ahead is held back)."""
        x = np.asarray(x, np.float32)
        if self.identity:
            self.seen += x.size
            self.emitted += x.size
            return x
        self.carry = np.concatenate([self.carry, x])
        self.seen += x.size
        stop = max(self.emitted, ((self.seen - 1 - self.margin) * self.up) // self.down + 1)
        out = self._resample_carry(self.emitted, stop) if stop > self.emitted else np.zeros(0, np.float32)
        self.emitted = stop
        origin = self.seen - self.carry.size
        keep_from = max(origin, (self.emitted * self.down // self.up - self.margin) // self.down * self.down)
        self.carry = self.carry[keep_from - origin :]
        return out

    def flush(self) -> np.ndarray:
        """The rest of the stream's output (the end is zero-padded, as one-shot resampling does)."""
        stop = -(-self.seen * self.up // self.down)
        out = np.zeros(0, np.float32)
        if not self.identity and stop > self.emitted:
            out = self._resample_carry(self.emitted, stop)
        self.carry, self.emitted = np.zeros(0, np.float32), stop
        return out
