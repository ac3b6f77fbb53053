"""Prosodic and voice-quality features of speech, eGeMAPS-style, in NumPy only.

Frozen ASR-encoder states carry little emotion at telephone bandwidth; the prosodic and
voice-quality descriptors of the Geneva Minimalistic Acoustic Parameter Set (eGeMAPS, Eyben et al.
2016, IEEE Trans. Affective Computing 7(2)) do, above all once normalised per speaker. This module
computes a permissively licensed approximation of them, adapted to the 300-3400 Hz telephone band
(openSMILE itself is research-only):

* :func:`extract_llds` -- frame-level low-level descriptors (LLDs) on a 10 ms hop,
  :class:`ProsodyFrames`;
* :func:`pool_frames` -- the paper's frame rule: zero-pad to 128 frames, or adaptive-average-pool
  down to 128 (PyTorch's ``adaptive_avg_pool1d`` bins, as the speech encoder does);
* :func:`functionals` / :func:`extract_functionals` -- one vector of utterance statistics
  (:data:`FUNCTIONAL_NAMES`);
* :func:`yin` -- the vectorised YIN pitch core (also behind ``training.data.audio.estimate_f0``).

Input is mono float32 audio in [-1, 1] at :attr:`ProsodyOptions.sample_rate` (16 kHz, the
pipeline's rate), wide-band or telephone audio resampled to 16 kHz alike. Every spectral
descriptor is measured inside :attr:`ProsodyOptions.band_hz` (the telephone band by default), so
that studio and phone recordings of the same speech give comparable values; F0 comes from the
periodicity of the (squared) waveform, which survives a missing fundamental.

LLDs (:data:`LLD_NAMES`; frame ``i`` is centred on sample ``i * hop``; the descriptors marked
"voiced" are 0 on unvoiced frames, openSMILE's convention; all are smoothed with a 3-frame
symmetric moving average, the voiced ones within voiced runs only, like eGeMAPS' ``sma3``/``sma3nz``):

======================  =========  ========================================================================
name                    unit       how
======================  =========  ========================================================================
f0_semitones            st         voiced: ``12 log2(F0 / 27.5 Hz)``, F0 from the period chosen among the
                                   YIN candidates (40 ms window) of the squared, low-passed waveform by a
                                   Viterbi path (see :func:`_track_periods`), 5-frame median within voiced
                                   runs; runs shorter than ``min_voiced_frames`` are unvoiced
voicing_probability     0-1        ``1 -`` the minimum of the waveform's YIN cumulative-mean-normalised
                                   difference (CMND) over the searched lags; 0 on silent frames
loudness                sone-like  ``sum over mel bands of band power ** 0.33`` (Zwicker-style compression,
                                   no equal-loudness curve), power per sample of a 25 ms Hamming frame
rms_db                  dBFS       ``10 log10`` of the 25 ms frame's mean square (-120 floor)
hnr_db                  dB         voiced: ``10 log10(r / (1 - r))``, ``r`` the normalised
                                   autocorrelation at the YIN period (HNR by ACF, clipped to [-20, 40])
jitter_local            ratio      voiced: ``sum |T_i - T_(i-1)| / sum mean(T_i, T_(i-1))`` over the
                                   consecutive glottal periods ending within ``perturbation_window_s``
                                   of the frame; periods by waveform matching (below)
shimmer_local           ratio      voiced: the same with each period's RMS amplitude
alpha_ratio_db          dB         energy in ``alpha_split_hz..band_hz[1]`` over energy in
                                   ``band_hz[0]..alpha_split_hz`` (openSMILE's sign: high over low;
                                   eGeMAPS bands 1-5 kHz / 50-1000 Hz)
hammarberg_db           dB         strongest bin below ``hammarberg_split_hz`` over strongest bin above,
                                   within the band (eGeMAPS: 0-2 / 2-5 kHz)
spectral_slope_low      dB/kHz     least-squares slope of the dB power spectrum in ``slope_bands_hz[0]``
spectral_slope_high     dB/kHz     the same in ``slope_bands_hz[1]`` (eGeMAPS: 0-500, 500-1500 Hz)
spectral_flux           -          ``sum (s_t - s_(t-1))**2`` of the in-band magnitude spectrum normalised
                                   to unit sum (level-independent); 0 on the first frame
mfcc1 .. mfcc4          -          DCT-II (orthonormal) of the log mel-band powers (``n_mels`` bands
                                   spanning ``band_hz``), coefficients 1-4
======================  =========  ========================================================================

Glottal periods (jitter, shimmer): inside each voiced run, starting at its first frame, the next
period is the lag in ``0.8-1.2 x`` the local YIN period that maximises the normalised
cross-correlation of one period of waveform with the following one (waveform matching, with
parabolic sub-sample refinement); a run's tracking stops where that correlation falls below
``period_min_correlation``. Formants are not computed (LPC root finding per frame costs more than
everything else together).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "FUNCTIONAL_NAMES",
    "LLD_NAMES",
    "ProsodyFrames",
    "ProsodyOptions",
    "YinEstimate",
    "average_frames",
    "extract_functionals",
    "extract_llds",
    "functionals",
    "pool_frames",
    "yin",
]

F0_REFERENCE_HZ = 27.5
"""Semitone reference of ``f0_semitones`` (A0, as eGeMAPS)."""

LLD_NAMES: tuple[str, ...] = (
    "f0_semitones",
    "voicing_probability",
    "loudness",
    "rms_db",
    "hnr_db",
    "jitter_local",
    "shimmer_local",
    "alpha_ratio_db",
    "hammarberg_db",
    "spectral_slope_low",
    "spectral_slope_high",
    "spectral_flux",
    "mfcc1",
    "mfcc2",
    "mfcc3",
    "mfcc4",
)
_L = {name: i for i, name in enumerate(LLD_NAMES)}
_VOICED_LLDS = ("f0_semitones", "hnr_db", "jitter_local", "shimmer_local")
_SPECTRAL_LLDS = (
    "alpha_ratio_db",
    "hammarberg_db",
    "spectral_slope_low",
    "spectral_slope_high",
    "spectral_flux",
    "mfcc1",
    "mfcc2",
    "mfcc3",
    "mfcc4",
)
_UNVOICED_SPECTRAL_LLDS = _SPECTRAL_LLDS[:5]
_N_MFCC = 4


def _functional_names() -> tuple[str, ...]:
    contour = ("mean", "sd", "p20", "p50", "p80", "range_20_80")
    slopes = ("rising_slope_mean", "rising_slope_sd", "falling_slope_mean", "falling_slope_sd")
    names = [f"f0_{s}" for s in (*contour, *slopes, "trend")]
    names += [f"loudness_{s}" for s in ("mean", "cv", *contour[2:], *slopes)]
    names += ["hnr_db_mean", "hnr_db_sd", "jitter_local_mean", "jitter_local_cv"]
    names += ["shimmer_local_mean", "shimmer_local_cv", "voicing_probability_mean"]
    names += [f"{lld}_{s}_voiced" for lld in _SPECTRAL_LLDS for s in ("mean", "sd")]
    names += [f"{lld}_mean_unvoiced" for lld in _UNVOICED_SPECTRAL_LLDS]
    names += [
        "loudness_peaks_per_s",
        "voiced_segments_per_s",
        "voiced_segment_mean_s",
        "voiced_segment_sd_s",
        "pause_mean_s",
        "pause_sd_s",
        "voiced_fraction",
        "equivalent_sound_level_db",
    ]
    return tuple(names)


FUNCTIONAL_NAMES: tuple[str, ...] = _functional_names()
"""Utterance functionals (59). Statistics over voiced frames for F0 (st), HNR, jitter, shimmer,
voicing probability and the ``*_voiced`` spectral descriptors; over active (non-silent) unvoiced
frames for ``*_unvoiced``; over active frames for loudness. ``sd`` is the standard deviation,
``cv`` the coefficient of variation (SD / mean, for positive quantities), ``pNN`` percentiles,
``range_20_80`` = p80 - p20. Rising/falling slopes: mean and SD over the monotonic stretches of the
contour (within voiced runs for F0), in st/s and loudness units/s (falling slopes positive).
``f0_trend``: least-squares slope of F0 over the voiced frames (st/s). Segments: voiced runs per
second of audio, their mean/SD length, and the mean/SD length of the pauses *between* voiced runs
(leading and trailing silence excluded: it depends on how the clip was cut). Loudness peaks: maxima
that rise and fall by at least ``loudness_peak_delta`` x the utterance's 95th-percentile loudness.
``equivalent_sound_level_db``: ``10 log10`` of the mean frame power. Empty selections give 0, so
every value is finite, silence included."""


@dataclass(frozen=True)
class ProsodyOptions:
    """Analysis settings of :func:`extract_llds` and :func:`functionals`."""

    sample_rate: int = 16_000
    hop_s: float = 0.01
    """Frame hop (10 ms, eGeMAPS)."""
    frame_s: float = 0.025
    """Spectral window (Hamming) for loudness, level and the spectral descriptors."""
    f0_frame_s: float = 0.04
    """YIN integration window."""
    f0_min_hz: float = 60.0
    """Lowest F0 searched: adult male creak-free speech rarely goes lower."""
    f0_max_hz: float = 700.0
    """Highest F0 searched: strongly acted fear and surprise of adult women reach 600 Hz."""
    yin_threshold: float = 0.3
    """A frame is voiced when it is active and the waveform's YIN CMND dips below this somewhere."""
    f0_signal: Literal["squared", "waveform"] = "squared"
    """Signal whose YIN minima are the period candidates. ``squared``: the waveform low-passed below
    a quarter of the rate (and ``band_hz``), then squared: the difference tones between neighbouring
    harmonics restore a fundamental that the telephone band removed. 27 RAVDESS clips through the
    phone channel against their studio originals: 3% of the frames voiced in both are off by more
    than 2 semitones, against 14% with candidates from the waveform itself (F0 read at 2x-4x)."""
    f0_candidates: int = 4
    """Period candidates per frame (the deepest CMND minima) for the F0 path."""
    octave_jump_cost: float = 0.5
    long_period_cost: float = 0.05
    """Path cost per octave of period above the shortest searched, in CMND units: among equally deep
    dips (T, 2T, 3T of a steady voice) the shortest period wins."""
    """Path cost of one octave of F0 change between neighbouring frames, in CMND units."""
    min_voiced_frames: int = 3
    """Voiced runs shorter than this are set unvoiced (spurious detections)."""
    f0_median_frames: int = 5
    """Median filter length over F0 within voiced runs (1 disables)."""
    silence_db: float = -60.0
    """Absolute floor: frames with ``rms_db`` below are silent."""
    relative_silence_db: float = -45.0
    """Frames more than this below the utterance's loudest frame are silent."""
    band_hz: tuple[float, float] = (300.0, 3400.0)
    """Analysis band of every spectral descriptor (the telephone band)."""
    n_mels: int = 24
    alpha_split_hz: float = 1000.0
    hammarberg_split_hz: float = 2000.0
    slope_bands_hz: tuple[tuple[float, float], tuple[float, float]] = ((300.0, 1000.0), (1000.0, 3400.0))
    perturbation_window_s: float = 0.06
    """Jitter/shimmer of a frame: the period pairs ending within ±half of this of its centre."""
    period_min_correlation: float = 0.5
    """Glottal period tracking stops where one period correlates less than this with the next."""
    loudness_peak_delta: float = 0.2
    """Rise and fall a loudness peak needs, as a fraction of the 95th-percentile loudness."""

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_s <= 0 or self.frame_s <= 0 or self.f0_frame_s <= 0:
            raise ValueError("sample rate, hop and frame lengths must be positive")
        if not 0 < self.f0_min_hz < self.f0_max_hz < self.sample_rate / 2:
            raise ValueError(f"need 0 < f0_min_hz < f0_max_hz < Nyquist, got {self.f0_min_hz}, {self.f0_max_hz}")
        low, high = self.band_hz
        if not 0 <= low < high <= self.sample_rate / 2:
            raise ValueError(f"band_hz {self.band_hz} must lie within 0..Nyquist")
        for split in (self.alpha_split_hz, self.hammarberg_split_hz):
            if not low < split < high:
                raise ValueError(f"split frequency {split} Hz must lie inside band_hz {self.band_hz}")

    @property
    def hop(self) -> int:
        """Hop in samples."""
        return max(1, round(self.hop_s * self.sample_rate))


# ---- YIN ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class YinFunctions:
    """YIN's lag functions of a batch of frames, ``[n_frames, tau_max + 1]`` float64."""

    cmnd: np.ndarray
    """Cumulative-mean-normalised difference ``d'(tau)`` (1 at lag 0; near 0 at a period)."""
    correlation: np.ndarray
    """Normalised autocorrelation ``r(tau) = acf(tau) / sqrt(e(0) e(tau))``."""
    energy: np.ndarray
    """``[n_frames]``: sum of squares over the integration window."""


def yin_functions(frames: np.ndarray, win: int, tau_max: int) -> YinFunctions:
    """YIN's difference function (through FFT autocorrelation) and its cumulative-mean normalisation
    for ``frames`` ``[n, win + tau_max]``: lag ``tau`` compares samples ``0..win`` with ``tau..tau + win``."""
    frames = np.asarray(frames, dtype=np.float64)
    n_frames = frames.shape[0]
    # lags 0..tau_max of head (win samples) against the frame never wrap round once nfft >= win + tau_max
    nfft = 1 << int(np.ceil(np.log2(win + tau_max)))
    spec = np.fft.rfft(frames, nfft)
    head = np.fft.rfft(frames[:, :win], nfft)
    acf = np.fft.irfft(np.conj(head) * spec, nfft)[:, : tau_max + 1]
    csum = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(frames**2, axis=1)], axis=1)
    taus = np.arange(tau_max + 1)
    energy0 = csum[:, win]
    lagged_energy = csum[:, taus + win] - csum[:, taus]
    diff = energy0[:, None] + lagged_energy - 2.0 * acf
    diff[:, 0] = 0.0
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    correlation = acf / np.sqrt(np.maximum(energy0[:, None] * lagged_energy, 1e-24))
    return YinFunctions(cmnd, correlation, energy0)


def _parabolic_shift(y: np.ndarray, rows: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Offset (-1..1) of the vertex of the parabola through ``y[rows, lags - 1 .. lags + 1]``."""
    a, b, d = y[rows, lags - 1], y[rows, lags], y[rows, lags + 1]
    den = a - 2 * b + d
    shift = np.where(np.abs(den) > 1e-12, 0.5 * (a - d) / np.where(den == 0, 1, den), 0.0)
    return np.clip(shift, -1, 1)


@dataclass(frozen=True)
class YinEstimate:
    """Per-frame YIN results (``[n_frames]`` float64)."""

    period: np.ndarray
    """Period in samples (parabolic interpolation), 0 where no lag dips below the threshold."""
    energy: np.ndarray
    """Sum of squares over the integration window."""


def yin(frames: np.ndarray, win: int, tau_min: int, tau_max: int, threshold: float) -> YinEstimate:
    """Classic YIN (de Cheveigné & Kawahara 2002) on ``frames`` ``[n, win + tau_max]``, vectorised:
    the first lag in ``[tau_min, tau_max)`` below ``threshold`` that is a local minimum of the
    CMND, refined by parabolic interpolation."""
    fn = yin_functions(frames, win, tau_max)
    c = fn.cmnd[:, tau_min : tau_max + 1]
    dip = (c[:, :-1] < threshold) & (c[:, :-1] <= c[:, 1:])
    has = dip.any(axis=1)
    tc = np.clip(np.argmax(dip, axis=1) + tau_min, 1, tau_max - 1)
    rows = np.arange(c.shape[0])
    period = np.where(has, tc + _parabolic_shift(fn.cmnd, rows, tc), 0.0)
    return YinEstimate(period, fn.energy)


@dataclass(frozen=True)
class _PeriodTrack:
    period: np.ndarray
    """Samples; 0 on frames without a period."""
    aperiodicity: np.ndarray
    """Minimum of the waveform's CMND over the searched lags."""
    correlation: np.ndarray
    """Normalised autocorrelation at the chosen lag (0 on frames without a period)."""


def _track_periods(
    fn: YinFunctions, pitch_fn: YinFunctions, tau_min: int, tau_max: int, active: np.ndarray, opts: ProsodyOptions
) -> _PeriodTrack:
    """The period of every voiced frame, chosen among its YIN candidates by a Viterbi path.

    ``fn``: YIN functions of the waveform (voicing, HNR); ``pitch_fn``: of the signal the period
    candidates come from (:attr:`ProsodyOptions.f0_signal`). A frame is voiced when it is active
    and the waveform's CMND dips below ``yin_threshold``. Each local minimum of ``pitch_fn``'s CMND
    in ``(tau_min, tau_max)`` costs its parabolic vertex value plus ``long_period_cost`` per octave
    above ``tau_min`` (T, 2T, 3T of a steady voice dip equally deep: the shortest wins); the
    ``f0_candidates`` cheapest are the frame's candidates. Within each voiced run the path minimises
    the candidates' costs plus ``octave_jump_cost`` per octave of change between neighbouring frames.
    Classic YIN's "first dip below the threshold" takes the partial dips at T/2 and T/3 of
    band-limited speech (its fundamental is gone, its 2nd and 3rd harmonics are strong) for the
    period; the squared signal and the path do not.
    """
    raw = fn.cmnd[:, tau_min:tau_max]
    c = pitch_fn.cmnd[:, tau_min:tau_max]
    n_frames, n_lags = c.shape
    period = np.zeros(n_frames)
    aperiodicity = raw.min(axis=1) if n_lags else np.ones(n_frames)
    correlation = np.zeros(n_frames)
    if n_lags < 3 or n_frames == 0:
        return _PeriodTrack(period, aperiodicity, correlation)
    # every local minimum's parabolic vertex (a period between two samples competes fairly with its
    # integer multiples) plus the long-period cost; the f0_candidates cheapest are the candidates
    a, b, d = c[:, :-2], c[:, 1:-1], c[:, 2:]
    den = a - 2 * b + d
    shift = np.clip(np.where(den > 1e-12, 0.5 * (a - d) / np.where(den > 1e-12, den, 1.0), 0.0), -1, 1)
    log_lag = np.log2(np.arange(tau_min + 1, tau_max - 1) + shift)
    cost = np.maximum(b - 0.25 * (a - d) * shift, 0.0) + opts.long_period_cost * (log_lag - np.log2(tau_min))
    cost = np.where((b <= a) & (b <= d), cost, np.inf)
    k = min(opts.f0_candidates, cost.shape[1])
    pick = np.argpartition(cost, k - 1, axis=1)[:, :k]
    cand = np.take_along_axis(cost, pick, axis=1)
    log_lag = np.take_along_axis(log_lag, pick, axis=1)
    refined = 2.0**log_lag
    voiced = active & (aperiodicity < opts.yin_threshold)
    choice = np.zeros(n_frames, dtype=int)
    w = opts.octave_jump_cost
    for start, stop in _runs(voiced):
        path_cost = cand[start].copy()
        back = np.zeros((stop - start, k), dtype=int)
        for i in range(start + 1, stop):
            total = path_cost[:, None] + w * np.abs(log_lag[i - 1][:, None] - log_lag[i][None, :])
            back[i - start] = np.argmin(total, axis=0)
            path_cost = total[back[i - start], np.arange(k)] + cand[i]
        j = int(np.argmin(path_cost))
        for i in range(stop - 1, start - 1, -1):
            choice[i] = j
            j = back[i - start, j]
    chosen = (np.arange(n_frames), choice)
    period = np.where(voiced, refined[chosen], 0.0)
    correlation = np.where(voiced, fn.correlation[np.arange(n_frames), np.rint(period).astype(int)], 0.0)
    return _PeriodTrack(period, aperiodicity, correlation)


# ---- frame-level descriptors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProsodyFrames:
    """Low-level descriptors of one utterance."""

    values: np.ndarray
    """float32 ``[n_frames, len(LLD_NAMES)]``, columns in :data:`LLD_NAMES` order."""
    voiced: np.ndarray
    """bool ``[n_frames]``: F0 found (and the frame active)."""
    active: np.ndarray
    """bool ``[n_frames]``: not silent (see :attr:`ProsodyOptions.silence_db`)."""
    hop_s: float
    duration_s: float

    def __getitem__(self, name: str) -> np.ndarray:
        """One descriptor's column by name."""
        return self.values[:, _L[name]]

    @property
    def n_frames(self) -> int:
        return int(self.values.shape[0])


@cache
def _mel_filterbank(sample_rate: int, nfft: int, n_mels: int, low: float, high: float) -> np.ndarray:
    """Triangular HTK-mel filters ``[nfft // 2 + 1, n_mels]`` spanning ``low..high`` Hz."""
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(mel(low), mel(high), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)[:, None]
    rising = (freqs - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[None, 2:] - freqs) / (edges[2:] - edges[1:-1])
    return np.maximum(0.0, np.minimum(rising, falling))


@cache
def _lowpass_taps(sample_rate: int, cutoff_hz: float, n_taps: int = 63) -> np.ndarray:
    """Linear-phase FIR low-pass (Hamming-windowed sinc), unit DC gain."""
    m = np.arange(n_taps) - (n_taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / sample_rate * m) * np.hamming(n_taps)
    return h / h.sum()


@cache
def _dct_matrix(n_mels: int, n_coeffs: int) -> np.ndarray:
    """Orthonormal DCT-II rows 1..n_coeffs as ``[n_mels, n_coeffs]`` (``log_mel @ matrix``)."""
    k = np.arange(1, n_coeffs + 1)[None, :]
    m = np.arange(n_mels)[:, None]
    return np.sqrt(2.0 / n_mels) * np.cos(np.pi * k * (2 * m + 1) / (2 * n_mels))


@cache
def _slope_weights(freqs_khz: tuple[float, ...], band: tuple[float, float]) -> np.ndarray:
    """Least-squares slope as a dot product: ``dB[band] @ weights`` (dB per kHz)."""
    f = np.asarray(freqs_khz)
    inside = (f >= band[0] / 1000) & (f <= band[1] / 1000)
    w = np.zeros_like(f)
    centred = f[inside] - f[inside].mean()
    w[inside] = centred / np.sum(centred**2)
    return w


def _frame_signal(x: np.ndarray, n_frames: int, hop: int, length: int, before: int) -> np.ndarray:
    """``[n_frames, length]`` windows, window ``i`` starting ``before`` samples before ``i * hop``
    (zero outside the signal)."""
    need = (n_frames - 1) * hop + length
    padded = np.zeros(need, dtype=np.float64)
    lo = before
    n = min(x.size, need - lo)
    padded[lo : lo + n] = x[:n]
    return sliding_window_view(padded, length)[::hop][:n_frames]


def _runs(mask: np.ndarray) -> np.ndarray:
    """``[k, 2]`` (start, stop) frame indices of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def _smooth3(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """3-frame symmetric moving average over the frames of ``mask`` (others stay 0)."""
    v = np.where(mask, x, 0.0)
    c = mask.astype(np.float64)
    pad_v, pad_c = np.pad(v, 1), np.pad(c, 1)
    s = pad_v[:-2] + pad_v[1:-1] + pad_v[2:]
    n = pad_c[:-2] + pad_c[1:-1] + pad_c[2:]
    return np.where(mask, s / np.maximum(n, 1.0), 0.0)


def _median_within(x: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """Median over the ``width`` frames around each frame of ``mask``, using masked frames only."""
    if width <= 1 or not mask.any():
        return np.where(mask, x, 0.0)
    half = width // 2
    padded = np.pad(np.where(mask, x, np.nan), half, constant_values=np.nan)
    windows = sliding_window_view(padded, width)[mask]
    out = np.zeros_like(x)
    out[mask] = np.nanmedian(windows, axis=1)
    return out


def _glottal_periods(
    x: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray, opts: ProsodyOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive glottal periods by waveform matching: ``(end times s, lengths in samples, RMS
    amplitudes, stretch index)``, one entry per period, in time order. Periods of one stretch are
    consecutive; a new stretch starts with each voiced run and after each period that fails to
    match (its tracking then skips one nominal period)."""
    sr, hop = opts.sample_rate, opts.hop
    ends: list[float] = []
    periods: list[float] = []
    amps: list[float] = []
    stretch_ids: list[int] = []
    stretch = 0
    for start, stop in _runs(voiced):
        t = float(start * hop)
        stretch += 1
        while (k := round(t / hop)) < stop:
            p = sr / f0_hz[k]
            n, lo, hi = round(p), int(0.8 * p), math.ceil(1.2 * p)
            i = round(t)
            if i + hi + n > x.size:
                break
            ref = x[i : i + n]
            seg = x[i + lo : i + hi + n]
            csum = np.concatenate([[0.0], np.cumsum(seg * seg)])
            energy = csum[n:] - csum[:-n]
            r = np.correlate(seg, ref, mode="valid") / np.sqrt(np.maximum(energy * float(ref @ ref), 1e-24))
            j = int(np.argmax(r))
            if r[j] < opts.period_min_correlation:
                t += p
                stretch += 1
                continue
            delta = 0.0
            if 0 < j < r.size - 1:
                den = r[j - 1] - 2 * r[j] + r[j + 1]
                if den < 0:
                    delta = float(np.clip(0.5 * (r[j - 1] - r[j + 1]) / den, -0.5, 0.5))
            period = lo + j + delta
            one = x[i : i + round(period)]
            t += period
            ends.append(t / sr)
            periods.append(period)
            amps.append(math.sqrt(float(one @ one) / one.size))
            stretch_ids.append(stretch)
    return np.asarray(ends), np.asarray(periods), np.asarray(amps), np.asarray(stretch_ids, dtype=int)


def _perturbation(
    centres_s: np.ndarray, times: np.ndarray, values: np.ndarray, stretches: np.ndarray, window_s: float
) -> np.ndarray:
    """Per frame: ``sum |v_i - v_(i-1)| / sum mean(v_i, v_(i-1))`` over consecutive pairs (same stretch)
    ending within ``window_s / 2`` of the frame centre; 0 where there is none."""
    out = np.zeros(centres_s.size)
    if values.size < 2:
        return out
    same = stretches[1:] == stretches[:-1]
    t = times[1:][same]
    num = np.abs(np.diff(values))[same]
    den = 0.5 * (values[1:] + values[:-1])[same]
    if t.size == 0:
        return out
    cn = np.concatenate([[0.0], np.cumsum(num)])
    cd = np.concatenate([[0.0], np.cumsum(den)])
    lo = np.searchsorted(t, centres_s - window_s / 2, side="left")
    hi = np.searchsorted(t, centres_s + window_s / 2, side="right")
    total = cd[hi] - cd[lo]
    return np.where(total > 0, (cn[hi] - cn[lo]) / np.maximum(total, 1e-12), 0.0)


def _spectral_llds(x: np.ndarray, n_frames: int, opts: ProsodyOptions) -> dict[str, np.ndarray]:
    """Level, loudness and the in-band spectral descriptors of every frame (25 ms Hamming)."""
    sr, eps = opts.sample_rate, 1e-12
    frame_len = round(opts.frame_s * sr)
    nfft = 1 << int(np.ceil(np.log2(frame_len)))
    window = np.hamming(frame_len)
    frames = _frame_signal(x, n_frames, opts.hop, frame_len, frame_len // 2)
    power = np.abs(np.fft.rfft(frames * window, nfft)) ** 2 / np.sum(window**2)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    low, high = opts.band_hz
    band = (freqs >= low) & (freqs <= high)
    mel_power = power @ _mel_filterbank(sr, nfft, opts.n_mels, low, high)
    mfcc = np.log(mel_power + eps) @ _dct_matrix(opts.n_mels, _N_MFCC)

    def low_over_high_db(split_hz: float, reduce: str) -> np.ndarray:
        below = getattr(power[:, band & (freqs < split_hz)], reduce)(axis=1)
        above = getattr(power[:, band & (freqs >= split_hz)], reduce)(axis=1)
        return 10 * np.log10((below + eps) / (above + eps))

    power_db = 10 * np.log10(power + eps)
    freqs_khz = tuple(float(f) for f in freqs / 1000)
    magnitude = np.sqrt(power[:, band])
    shape = magnitude / np.maximum(magnitude.sum(axis=1, keepdims=True), eps)
    return {
        "loudness": np.sum(mel_power**0.33, axis=1),
        "rms_db": 10 * np.log10(np.maximum(np.mean(frames**2, axis=1), eps)),
        "alpha_ratio_db": -low_over_high_db(opts.alpha_split_hz, "sum"),
        "hammarberg_db": low_over_high_db(opts.hammarberg_split_hz, "max"),
        "spectral_slope_low": power_db @ _slope_weights(freqs_khz, opts.slope_bands_hz[0]),
        "spectral_slope_high": power_db @ _slope_weights(freqs_khz, opts.slope_bands_hz[1]),
        "spectral_flux": np.concatenate([[0.0], np.sum(np.diff(shape, axis=0) ** 2, axis=1)]),
        **{f"mfcc{k + 1}": mfcc[:, k] for k in range(_N_MFCC)},
    }


def _pitch_llds(x: np.ndarray, n_frames: int, active: np.ndarray, opts: ProsodyOptions) -> dict[str, np.ndarray]:
    """F0 (Hz and semitones), voicing probability, HNR, jitter and shimmer of every frame, and the
    voiced mask (``"voiced"``)."""
    sr, hop = opts.sample_rate, opts.hop
    win = round(opts.f0_frame_s * sr)
    tau_max = int(sr / opts.f0_min_hz)
    tau_min = max(2, int(sr / opts.f0_max_hz))
    fn = yin_functions(_frame_signal(x, n_frames, hop, win + tau_max, win // 2), win, tau_max)
    pitch_fn = fn
    if opts.f0_signal == "squared":
        # band-limit to below a quarter of the rate first: squaring doubles the bandwidth, and what
        # would alias back is not harmonic (at 600 Hz that left only 3T exactly periodic)
        narrow = np.convolve(x, _lowpass_taps(sr, min(opts.band_hz[1], sr / 4)), mode="same") if x.size else x
        energy = narrow * narrow - np.mean(narrow * narrow) if x.size else x
        pitch_fn = yin_functions(_frame_signal(energy, n_frames, hop, win + tau_max, win // 2), win, tau_max)
    track = _track_periods(fn, pitch_fn, tau_min, tau_max, active, opts)
    voiced = track.period > 0
    for start, stop in _runs(voiced):
        if stop - start < opts.min_voiced_frames:
            voiced[start:stop] = False
    f0_st = np.where(voiced, 12 * np.log2(sr / np.maximum(track.period, 1e-9) / F0_REFERENCE_HZ), 0.0)
    f0_st = _median_within(f0_st, voiced, opts.f0_median_frames)
    f0_hz = np.where(voiced, F0_REFERENCE_HZ * 2 ** (f0_st / 12), 0.0)
    r = np.clip(track.correlation, 0.01, 1 - 1e-4)
    ends, periods, amps, stretches = _glottal_periods(x, f0_hz, voiced, opts)
    centres_s = np.arange(n_frames) * hop / sr
    jitter = _perturbation(centres_s, ends, periods, stretches, opts.perturbation_window_s)
    shimmer = _perturbation(centres_s, ends, amps, stretches, opts.perturbation_window_s)
    return {
        "voiced": voiced,
        "f0_semitones": f0_st,
        "voicing_probability": np.where(active, np.clip(1.0 - track.aperiodicity, 0.0, 1.0), 0.0),
        "hnr_db": np.where(voiced, np.clip(10 * np.log10(r / (1 - r)), -20.0, 40.0), 0.0),
        "jitter_local": np.where(voiced, jitter, 0.0),
        "shimmer_local": np.where(voiced, shimmer, 0.0),
    }


def extract_llds(audio: np.ndarray, options: ProsodyOptions | None = None) -> ProsodyFrames:
    """Frame-level descriptors (:data:`LLD_NAMES`) of mono ``audio`` at ``options.sample_rate``:
    ``1 + len(audio) // hop`` frames, frame ``i`` centred on sample ``i * hop``."""
    opts = options or ProsodyOptions()
    x = np.asarray(audio, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("audio holds NaN or infinite samples")
    n_frames = 1 + x.size // opts.hop
    columns = _spectral_llds(x, n_frames, opts)
    level = columns["rms_db"]
    active = (level > opts.silence_db) & (level > level.max() + opts.relative_silence_db)
    columns |= _pitch_llds(x, n_frames, active, opts)
    voiced = columns.pop("voiced")
    everywhere = np.ones(n_frames, dtype=bool)
    values = np.stack(
        [_smooth3(columns[name], voiced if name in _VOICED_LLDS else everywhere) for name in LLD_NAMES], axis=1
    )
    sr = opts.sample_rate
    return ProsodyFrames(values.astype(np.float32), voiced, active, opts.hop / sr, x.size / sr)


# ---- the paper's frame rule -----------------------------------------------------------------------------


def average_frames(x: np.ndarray, n: int) -> np.ndarray:
    """``[T, D]`` frames averaged onto exactly ``n`` frames spanning the same time, with PyTorch's
    ``adaptive_avg_pool1d`` bins: output ``j`` averages frames ``floor(j T / n) .. ceil((j + 1) T / n) - 1``
    (``T < n`` repeats frames). float32 ``[n, D]``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or n < 1:
        raise ValueError(f"average_frames expects [frames > 0, features] and n >= 1, got {x.shape} and {n}")
    t, d = x.shape
    j = np.arange(n)
    start = (j * t) // n
    stop = -((-(j + 1) * t) // n)
    csum = np.concatenate([np.zeros((1, d)), np.cumsum(x, axis=0, dtype=np.float64)])
    return ((csum[stop] - csum[start]) / (stop - start)[:, None]).astype(np.float32)


def pool_frames(lld: np.ndarray, n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``[T, D]`` frames -> exactly ``n`` frames and their mask (the speech encoder's rule).

    ``T <= n``: zero padding (mask True on the ``T`` real frames). ``T > n``: adaptive average
    pooling (:func:`average_frames`).
    """
    lld = np.asarray(lld, dtype=np.float32)
    if lld.ndim != 2:
        raise ValueError(f"pool_frames expects [frames, features], got shape {lld.shape}")
    t, d = lld.shape
    if t <= n:
        frames = np.zeros((n, d), np.float32)
        frames[:t] = lld
        mask = np.zeros(n, bool)
        mask[:t] = True
        return frames, mask
    return average_frames(lld, n), np.ones(n, bool)


# ---- utterance functionals ------------------------------------------------------------------------------


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if v.size else 0.0


def _sd(v: np.ndarray) -> float:
    return float(v.std()) if v.size > 1 else 0.0


def _cv(v: np.ndarray) -> float:
    m = _mean(v)
    return _sd(v) / m if m > 1e-12 else 0.0


def _percentiles(v: np.ndarray) -> list[float]:
    if not v.size:
        return [0.0, 0.0, 0.0, 0.0]
    p20, p50, p80 = np.percentile(v, [20, 50, 80])
    return [float(p20), float(p50), float(p80), float(p80 - p20)]


def _rise_fall(x: np.ndarray, mask: np.ndarray, hop_s: float) -> list[float]:
    """Mean and SD of the rising and falling slopes (per second; falling ones positive) over the
    monotonic stretches of ``x`` within runs of ``mask``."""
    d = np.diff(x)
    direction = np.where(mask[1:] & mask[:-1], np.sign(d), 0.0)
    out: list[float] = []
    for sign in (1.0, -1.0):
        steps = direction == sign
        runs = _runs(steps)
        if not len(runs):
            out += [0.0, 0.0]
            continue
        csum = np.concatenate([[0.0], np.cumsum(np.where(steps, d, 0.0))])
        slopes = sign * (csum[runs[:, 1]] - csum[runs[:, 0]]) / ((runs[:, 1] - runs[:, 0]) * hop_s)
        out += [_mean(slopes), _sd(slopes)]
    return out


def _trend(x: np.ndarray, mask: np.ndarray, hop_s: float) -> float:
    """Least-squares slope of ``x`` over the frames of ``mask``, per second."""
    t = np.flatnonzero(mask) * hop_s
    if t.size < 2:
        return 0.0
    tc = t - t.mean()
    return float(np.sum(tc * (x[mask] - x[mask].mean())) / max(np.sum(tc**2), 1e-12))


def _peak_count(x: np.ndarray, delta: float) -> int:
    """Maxima that rise at least ``delta`` above the preceding minimum and are followed by a fall of
    at least ``delta`` (hysteresis peak picking)."""
    if delta <= 0 or x.size < 3:
        return 0
    count, looking_for_peak = 0, True
    low = high = float(x[0])
    for v in x.tolist():
        if looking_for_peak:
            high = max(high, v)
            if v < low:
                low = high = v
            elif high - low >= delta and high - v >= delta:
                count += 1
                looking_for_peak, low = False, v
        else:
            low = min(low, v)
            if v - low >= delta:
                looking_for_peak, high = True, v
    return count


def functionals(frames: ProsodyFrames, options: ProsodyOptions | None = None) -> np.ndarray:
    """The utterance's :data:`FUNCTIONAL_NAMES` values (float32), finite for any input."""
    opts = options or ProsodyOptions()
    voiced, active, hop_s = frames.voiced, frames.active, frames.hop_s
    duration = max(frames.duration_s, hop_s)
    f0 = frames["f0_semitones"]
    f0_v = f0[voiced]
    out: list[float] = [_mean(f0_v), _sd(f0_v), *_percentiles(f0_v), *_rise_fall(f0, voiced, hop_s)]
    out.append(_trend(f0, voiced, hop_s))
    loud = frames["loudness"]
    loud_a = loud[active]
    out += [_mean(loud_a), _cv(loud_a), *_percentiles(loud_a)]
    out += _rise_fall(loud, active, hop_s)
    hnr = frames["hnr_db"][voiced]
    out += [_mean(hnr), _sd(hnr)]
    for name in ("jitter_local", "shimmer_local"):
        v = frames[name]
        v = v[voiced & (v > 0)]
        out += [_mean(v), _cv(v)]
    out.append(_mean(frames["voicing_probability"][voiced]))
    for name in _SPECTRAL_LLDS:
        v = frames[name][voiced]
        out += [_mean(v), _sd(v)]
    unvoiced = active & ~voiced
    out += [_mean(frames[name][unvoiced]) for name in _UNVOICED_SPECTRAL_LLDS]

    p95 = float(np.percentile(loud_a, 95)) if loud_a.size else 0.0
    out.append(_peak_count(loud, opts.loudness_peak_delta * p95) / duration)
    runs = _runs(voiced)
    lengths = (runs[:, 1] - runs[:, 0]) * hop_s
    pauses = (runs[1:, 0] - runs[:-1, 1]) * hop_s
    out += [len(runs) / duration, _mean(lengths), _sd(lengths), _mean(pauses), _sd(pauses)]
    out.append(float(voiced.mean()) if voiced.size else 0.0)
    mean_power = float(np.mean(10 ** (frames["rms_db"].astype(np.float64) / 10))) if frames.n_frames else 0.0
    out.append(10 * math.log10(max(mean_power, 1e-12)))
    values = np.asarray(out, dtype=np.float32)
    if values.size != len(FUNCTIONAL_NAMES):  # pragma: no cover - a programming error
        raise AssertionError(f"{values.size} functionals for {len(FUNCTIONAL_NAMES)} names")
    return values


def extract_functionals(audio: np.ndarray, options: ProsodyOptions | None = None) -> np.ndarray:
    """:func:`functionals` of :func:`extract_llds` of ``audio``."""
    opts = options or ProsodyOptions()
    return functionals(extract_llds(audio, opts), opts)
