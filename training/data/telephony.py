"""A narrow-band telephone channel simulator (NumPy, deterministic given a Generator).

:func:`apply_channel` takes level-normalised speech through, in order:

1. resampling to 8 kHz;
2. additive background noise at the channel's SNR (relative to the active speech level):
   ``white``, ``pink`` (1/f) or ``babble`` (several speech-shaped, syllable-modulated streams);
3. a gain offset with a slow gain drift (AGC / handset distance);
4. occasional hard clipping (an overdriven handset or ADC), and always a clamp at full scale;
5. the 300-3400 Hz telephone band-pass (linear-phase FIR);
6. optional G.711 mu-law companding with 8-bit quantisation;
7. resampling to the output rate (16 kHz keeps the 4 kHz band limit; 8 kHz stays narrow-band).

With ``telephony=False`` the speech is only resampled (clean wide-band reference condition).
Resampling uses the NumPy polyphase implementation of :func:`training.data.audio.resample`, so
the output is bit-identical whether or not SciPy is installed (and worker processes skip SciPy's
multi-second import).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache
from typing import Any

import numpy as np

from shared.audio import resample
from training.data.audio import active_rms_db
from training.data.manifest import Example

__all__ = [
    "BAND_HZ",
    "CONDITIONS",
    "NARROWBAND_SR",
    "ROBUSTNESS",
    "Channel",
    "apply_channel",
    "condition_channel",
    "hear",
    "noise",
    "pitch_shift",
    "sample_channel",
    "voice_copies",
    "voice_shift",
]

NARROWBAND_SR = 8_000
BAND_HZ = (300.0, 3400.0)
NOISE_KINDS = ("white", "pink", "babble")
_MU = 255.0


@dataclass(frozen=True)
class Channel:
    """One utterance's channel conditions (recorded in the manifest's ``extra``)."""

    telephony: bool
    noise: str | None
    snr_db: float | None
    gain_db: float
    drift_db: float
    """Peak deviation of the slow gain drift."""
    drift_hz: float
    clip: float | None
    """Hard-clip threshold as a fraction of the signal peak, or ``None``."""
    mu_law: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("snr_db", "gain_db", "drift_db", "drift_hz", "clip"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 3)
        return d


def sample_channel(
    rng: np.random.Generator,
    telephony: bool = True,
    *,
    snr_db: tuple[float, float] = (10.0, 30.0),
    clip_probability: float = 0.08,
    mu_law_probability: float = 0.7,
) -> Channel:
    """Random channel conditions: SNR uniform in ``snr_db``, noise kind uniform, gain ±3 dB with a
    0-1.5 dB drift, clipping with ``clip_probability``, mu-law with ``mu_law_probability``."""
    if not telephony:
        return Channel(False, None, None, 0.0, 0.0, 0.0, None, False)
    return Channel(
        telephony=True,
        noise=NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))],
        snr_db=float(rng.uniform(*snr_db)),
        gain_db=float(rng.uniform(-3.0, 3.0)),
        drift_db=float(rng.uniform(0.0, 1.5)),
        drift_hz=float(rng.uniform(0.1, 0.5)),
        clip=float(rng.uniform(0.35, 0.7)) if rng.random() < clip_probability else None,
        mu_law=bool(rng.random() < mu_law_probability),
    )


ROBUSTNESS: tuple[str, ...] = ("g711-snr10", "g711-quiet20", "g711-pitch+2", "g711-pitch-2")
"""The robustness conditions of the model card: a clean phone line (``g711``) with, each alone,
line noise at 10 dB SNR, the level 20 dB down, or the voice shifted 2 semitones up or down."""

VOICE_SEMITONES = 3.0
"""``phone-voices``: half the utterances keep their voice, the other half move by a shift drawn
uniformly within this many semitones either way (pitch and formants: a higher or lower voice)."""

CONDITIONS: tuple[str, ...] = ("none", "g711", "phone", "phone-voices", *ROBUSTNESS)
"""Listening conditions for training and evaluation audio (``data.channel``, ``emotion eval --channel``):

* ``none``: the audio as recorded;
* ``g711``: a clean phone line: 8 kHz, 300-3400 Hz, mu-law, no noise, no gain change;
* ``phone``: a random phone line per utterance (:func:`sample_channel`: noise at 10-30 dB SNR,
  gain and drift, occasional clipping, mu-law 70 % of the time), drawn from the utterance's key,
  so that an utterance always hears the same line;
* ``phone-voices``: the same random line as ``phone``, the voice first moved up or down for half the
  utterances (:func:`voice_shift`): a training condition, so that the model meets more voices than
  its corpus's actors;
* :data:`ROBUSTNESS`: ``g711-snr10`` (noise of a kind drawn from the key at 10 dB SNR),
  ``g711-quiet20`` (20 dB quieter), ``g711-pitch+2`` / ``g711-pitch-2`` (:func:`pitch_shift`
  before the line).
"""


def condition_channel(condition: str, key: str) -> Channel | None:
    """The :class:`Channel` of ``condition`` for the utterance keyed ``key`` (``None`` for ``none``)."""
    if condition == "none":
        return None
    if condition in ("g711", "g711-pitch+2", "g711-pitch-2"):
        return Channel(True, None, None, 0.0, 0.0, 0.0, None, True)
    if condition == "g711-snr10":
        kind = NOISE_KINDS[int(_key_rng(condition, key).integers(len(NOISE_KINDS)))]
        return Channel(True, kind, 10.0, 0.0, 0.0, 0.0, None, True)
    if condition == "g711-quiet20":
        return Channel(True, None, None, -20.0, 0.0, 0.0, None, True)
    if condition in ("phone", "phone-voices"):
        return sample_channel(_key_rng("phone", key))
    raise ValueError(f"unknown listening condition {condition!r}; choose from {', '.join(CONDITIONS)}")


def hear(speech: np.ndarray, sample_rate: int, condition: str, key: str) -> np.ndarray:
    """``speech`` as heard in ``condition`` (float32 at ``sample_rate``): the line and its noise are
    drawn from ``key`` (an utterance id), so the same utterance always sounds the same."""
    line = condition_channel(condition, key)
    if line is None:
        return np.asarray(speech, np.float32)
    if condition.startswith("g711-pitch"):
        speech = pitch_shift(speech, sample_rate, float(condition.removeprefix("g711-pitch")))
    if condition == "phone-voices":
        speech = pitch_shift(speech, sample_rate, voice_shift(key))
        condition = "phone"  # then the very line (and noise) ``phone`` gives this utterance
    return apply_channel(speech, sample_rate, line, _key_rng(f"{condition}-noise", key), sample_rate)


def voice_copies(examples: Sequence[Example], semitones: Sequence[float]) -> list[Example]:
    """Copies of each spoken example of ``examples``, one per shift in ``semitones``, each voice
    moved by that shift (pitch and formants, :func:`pitch_shift`, recorded as
    ``extra.voice_semitones``) and belonging to a new speaker, ``<speaker>~<shift>st`` (likewise
    its call and id). Unlike ``phone-voices``, which moves single utterances, a copy sounds lower
    or higher in *every* utterance of its speaker, as a deep or high voice does through a whole
    call, so the per-speaker baseline sees that voice as that speaker's normal. Text-only lines,
    lines without a speaker, lines already through a simulated line (the synthetic corpus) and
    text lines spoken flat by espeak-ng (``extra.text_id``: a synthetic voice whose point is that it
    carries no cue, not a speaker whose range matters) are not copied."""
    copies = []
    for shift in semitones:
        tag = f"~{float(shift):+g}st"
        for ex in examples:
            if ex.audio_path is None or not ex.speaker or ex.extra.get("channel") or ex.extra.get("text_id"):
                continue
            extra = {**ex.extra, "voice_semitones": float(shift)}
            call = f"{ex.call_id}{tag}" if ex.call_id else None
            copies.append(replace(ex, id=f"{ex.id}{tag}", speaker=f"{ex.speaker}{tag}", call_id=call, extra=extra))
    return copies


def voice_shift(key: str) -> float:
    """The semitones ``phone-voices`` moves the utterance keyed ``key`` by: 0 for half of them,
    otherwise uniform in ±:data:`VOICE_SEMITONES`."""
    rng = _key_rng("phone-voices", key)
    return 0.0 if rng.random() < 0.5 else float(rng.uniform(-VOICE_SEMITONES, VOICE_SEMITONES))


def pitch_shift(x: np.ndarray, sample_rate: int, semitones: float, n_fft: int = 1024) -> np.ndarray:
    """``x`` with its pitch (and formants) moved by ``semitones``, at the same duration: a phase
    vocoder stretches it in time by ``2 ** (semitones / 12)``, then it is resampled back to its
    length. ``n_fft`` is for 16 kHz audio (64 ms) and scales with ``sample_rate``."""
    x = np.asarray(x, np.float64)
    if semitones == 0 or x.size == 0:
        return x.astype(np.float32)
    rate = 2.0 ** (semitones / 12)
    n_fft = max(64, int(round(n_fft * sample_rate / 16_000)))
    hop = n_fft // 4
    window = np.hanning(n_fft + 1)[:-1]
    padded = np.pad(x, (n_fft, n_fft + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop] * window
    spec = np.fft.rfft(frames, axis=1)  # [frames, bins]
    steps = np.arange(0, spec.shape[0] - 1, 1 / rate)
    advance = 2 * np.pi * hop * np.arange(spec.shape[1]) / n_fft
    phase = np.angle(spec[0])
    out = np.empty((steps.size, spec.shape[1]), complex)
    for i, step in enumerate(steps):
        k, frac = int(step), step - int(step)
        left, right = spec[k], spec[k + 1]
        out[i] = ((1 - frac) * np.abs(left) + frac * np.abs(right)) * np.exp(1j * phase)
        delta = np.angle(right) - np.angle(left) - advance
        phase = phase + advance + (delta - 2 * np.pi * np.round(delta / (2 * np.pi)))
    chunks = np.fft.irfft(out, n_fft, axis=1) * window
    length = n_fft + hop * (steps.size - 1)
    y, norm = np.zeros(length), np.zeros(length)
    for i, chunk in enumerate(chunks):
        y[i * hop : i * hop + n_fft] += chunk
        norm[i * hop : i * hop + n_fft] += window**2
    y = y / np.maximum(norm, 1e-3 * norm.max())
    stretched = y[int(round(n_fft * rate)) :][: int(round(x.size * rate))]  # the padding, stretched, off
    positions = np.arange(x.size) * (stretched.size / x.size)  # back to the original length: the pitch moves
    return np.interp(positions, np.arange(stretched.size), stretched).astype(np.float32)


def _key_rng(condition: str, key: str) -> np.random.Generator:
    import hashlib

    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{condition}:{key}".encode()).digest()[:8], "little"))


def _shaped_noise(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    gain_of_freq: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Unit-RMS Gaussian noise (last axis = time) with magnitude response ``gain_of_freq(f)``
    (``f`` in cycles/sample), shaped in the frequency domain over a power-of-two length."""
    n = shape[-1]
    nfft = 1 << max(1, int(np.ceil(np.log2(n))))
    spec = np.fft.rfft(rng.standard_normal((*shape[:-1], nfft)), axis=-1)
    out = np.fft.irfft(spec * gain_of_freq(np.fft.rfftfreq(nfft)), nfft, axis=-1)[..., :n]
    return out / (np.sqrt(np.mean(out**2, axis=-1, keepdims=True)) + 1e-12)


def _ltass(f: np.ndarray, sample_rate: int) -> np.ndarray:
    """Long-term average speech spectrum shape: rises to ~500 Hz, then falls ~9 dB/octave."""
    r = f * sample_rate / 500.0
    return r / (1.0 + r**2.5)


def noise(kind: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of ``kind`` (``white``, ``pink``, ``babble``), ``n`` samples."""
    if n <= 0:
        return np.zeros(0)
    if kind == "white":
        x = rng.standard_normal(n)
        return x / (np.sqrt(np.mean(x**2)) + 1e-12)
    if kind == "pink":
        return _shaped_noise((n,), rng, lambda f: 1.0 / np.sqrt(np.maximum(f, 1.0 / n)))
    if kind == "babble":
        # 4-7 talkers: speech-shaped noise, syllable-rate (3-6 Hz) and phrase-rate gating
        k = int(rng.integers(4, 8))
        streams = _shaped_noise((k, n), rng, lambda f: _ltass(f, sample_rate))
        t = np.arange(n) / sample_rate
        syll_hz, syll_ph = rng.uniform(3, 6, (k, 1)), rng.uniform(0, 2 * np.pi, (k, 1))
        phrase_hz, phrase_ph = rng.uniform(0.2, 0.5, (k, 1)), rng.uniform(0, 2 * np.pi, (k, 1))
        syllables = (0.5 * (1 + np.sin(2 * np.pi * syll_hz * t + syll_ph))) ** 2
        phrases = np.sin(2 * np.pi * phrase_hz * t + phrase_ph) > -0.3
        total = np.sum(streams * syllables * phrases, axis=0)
        return total / (np.sqrt(np.mean(total**2)) + 1e-12)
    raise ValueError(f"unknown noise kind {kind!r} (expected one of {NOISE_KINDS})")


@cache
def _bandpass_taps(sample_rate: int, low: float, high: float, n_taps: int = 255) -> np.ndarray:
    """Linear-phase FIR band-pass: difference of two windowed sincs (Kaiser, beta 8)."""
    m = np.arange(n_taps) - (n_taps - 1) / 2
    fl, fh = low / sample_rate, high / sample_rate
    h = 2 * fh * np.sinc(2 * fh * m) - 2 * fl * np.sinc(2 * fl * m)
    h *= np.kaiser(n_taps, 8.0)
    centre = (low + high) / 2 / sample_rate
    response = np.abs(np.sum(h * np.exp(-2j * np.pi * centre * m)))
    return h / response


def bandpass(x: np.ndarray, sample_rate: int, band: tuple[float, float] = BAND_HZ) -> np.ndarray:
    """Zero-delay telephone band-pass of ``x`` (FFT convolution, ``"same"`` alignment)."""
    h = _bandpass_taps(sample_rate, band[0], band[1])
    if x.size == 0:
        return np.zeros(0)
    n_full = x.size + h.size - 1
    nfft = 1 << int(np.ceil(np.log2(n_full)))
    full = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:n_full]
    start = (h.size - 1) // 2
    return full[start : start + x.size]


def mu_law(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """G.711-style mu-law compress, quantise to ``bits`` bits, expand."""
    x = np.clip(x, -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(_MU * np.abs(x)) / math.log1p(_MU)
    levels = 2 ** (bits - 1) - 1
    q = np.round(compressed * levels) / levels
    return np.sign(q) * np.expm1(np.abs(q) * math.log1p(_MU)) / _MU


def apply_channel(
    speech: np.ndarray,
    sample_rate: int,
    channel: Channel,
    rng: np.random.Generator,
    out_sr: int = 16_000,
) -> np.ndarray:
    """Pass ``speech`` (at ``sample_rate``) through ``channel``; float32 at ``out_sr``."""
    if not channel.telephony:
        return resample(speech, sample_rate, out_sr, backend="numpy")
    x = resample(speech, sample_rate, NARROWBAND_SR, backend="numpy").astype(np.float64)
    if channel.noise is not None and channel.snr_db is not None:
        level = active_rms_db(x, NARROWBAND_SR)
        if math.isfinite(level):
            n = noise(channel.noise, x.size, NARROWBAND_SR, rng)
            x = x + n * 10 ** ((level - channel.snr_db) / 20)
    t = np.arange(x.size) / NARROWBAND_SR
    drift = channel.drift_db * np.sin(2 * np.pi * channel.drift_hz * t + rng.uniform(0, 2 * np.pi))
    x = x * 10 ** ((channel.gain_db + drift) / 20)
    if channel.clip is not None and x.size:
        threshold = channel.clip * float(np.max(np.abs(x)))
        x = np.clip(x, -threshold, threshold)
    x = np.clip(x, -1.0, 1.0)
    x = bandpass(x, NARROWBAND_SR)
    if channel.mu_law:
        x = mu_law(x)
    return resample(x.astype(np.float32), NARROWBAND_SR, out_sr, backend="numpy")
