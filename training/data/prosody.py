"""Emotional prosody for espeak-ng: speaker baselines, per-emotion profiles, SSML rendering.

Each emotion shifts a speaker's baseline along the vocal correlates reported by Murray & Arnott
(1993, Table 1) and Scherer (2003, Table 2):

=========  ============  =============  =========  ==========  ==============================
emotion    mean F0       F0 range       rate       intensity   contour
=========  ============  =============  =========  ==========  ==============================
anger      higher        much wider     faster     louder      abrupt emphatic peaks
happiness  much higher   much wider     faster     louder      smooth arcs, upward inflection
sadness    lower         narrower       slower     quieter     falling, long pauses
fear       much higher   wider          much fast  normal      irregular jumps, tremor
disgust    much lower    slightly wide  much slow  quieter     wide downward terminal fall
surprise   higher        much wider     faster     louder      rising, high onset
neutral    baseline      baseline       baseline   baseline    flat declination
=========  ============  =============  =========  ==========  ==============================

They are realised with espeak-ng's ``-p`` (mean pitch), ``-s`` (words per minute) and SSML
``<prosody range=...>`` plus per-phrase ``<prosody pitch=...>`` (the contour) and ``<break>``
(pauses). Loudness is a target speech level in dBFS applied after synthesis: espeak-ng's ``-a``
is a plain linear gain that clips internally above ~150, so scaling afterwards is equivalent and
exact. Every parameter gets per-utterance Gaussian jitter, so classes overlap as real speech does
(fear vs surprise vs happiness especially).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

__all__ = [
    "PROFILES",
    "Prosody",
    "ProsodyProfile",
    "Speaker",
    "apply_tremor",
    "chunk_words",
    "sample_prosody",
    "to_ssml",
]


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak-ng voice plus personal pitch/rate/level baselines."""

    id: str
    language: str
    role: str
    """``agent`` or ``customer``."""
    voice: str
    """espeak-ng ``-v`` value, e.g. ``en-gb+f3`` or ``ko+klatt2``."""
    gender: str
    pitch: int
    """Baseline espeak-ng ``-p`` (0-99)."""
    rate: int
    """Baseline words per minute."""
    level_db: float
    """Baseline active speech level in dBFS."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProsodyProfile:
    """How one emotion moves prosody away from the speaker's baseline (means and jitter SDs)."""

    pitch: float
    """Offset in espeak-ng ``-p`` units (about 0.18 semitone each)."""
    pitch_sd: float
    range_pct: float
    """SSML ``<prosody range>`` in percent of the voice's default (espeak caps at 200)."""
    range_sd: float
    rate: float
    """Multiplier of the speaker's words per minute."""
    rate_sd: float
    level_db: float
    level_sd: float
    contour: str
    """``flat``, ``emphatic``, ``arc``, ``falling``, ``irregular``, ``falling_wide``, ``rising``."""
    pause_ms: float
    """Extra pause at clause boundaries."""
    hesitation: float
    """Probability of an extra mid-clause pause after each phrase."""
    tremor: float
    """Mean relative F0 modulation depth of a 5-8 Hz tremor (0 = none)."""


PROFILES: dict[str, ProsodyProfile] = {
    "neutral": ProsodyProfile(0, 4, 100, 12, 1.00, 0.04, 0.0, 1.5, "flat", 150, 0.00, 0.0),
    "anger": ProsodyProfile(14, 6, 170, 25, 1.12, 0.06, 6.0, 2.0, "emphatic", 80, 0.00, 0.0),
    "happiness": ProsodyProfile(16, 6, 165, 25, 1.07, 0.06, 3.0, 2.0, "arc", 120, 0.00, 0.0),
    "sadness": ProsodyProfile(-12, 5, 55, 15, 0.80, 0.05, -6.0, 2.0, "falling", 350, 0.15, 0.0),
    "fear": ProsodyProfile(20, 7, 160, 30, 1.20, 0.07, 0.0, 2.0, "irregular", 100, 0.25, 0.012),
    "disgust": ProsodyProfile(-10, 6, 130, 25, 0.82, 0.06, -2.0, 2.0, "falling_wide", 300, 0.10, 0.0),
    "surprise": ProsodyProfile(18, 7, 180, 20, 1.05, 0.06, 4.0, 2.0, "rising", 120, 0.00, 0.0),
}


@dataclass(frozen=True)
class Prosody:
    """The concrete prosody of one utterance (what :func:`to_ssml` and the renderer use)."""

    emotion: str
    """The emotion the voice expresses (``neutral`` for text-only cues)."""
    pitch: int
    rate: int
    range_pct: int
    level_db: float
    contour: tuple[int, ...]
    """Pitch offset in percent for each phrase."""
    pause_ms: int
    """Extra pause at clause punctuation."""
    breaks_ms: tuple[int, ...]
    """Pause after each phrase (0 = none)."""
    tremor: float
    tremor_hz: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["contour"] = list(self.contour)
        d["breaks_ms"] = list(self.breaks_ms)
        d["level_db"] = round(self.level_db, 2)
        d["tremor"] = round(self.tremor, 4)
        d["tremor_hz"] = round(self.tremor_hz, 2)
        return d


def chunk_words(text: str, language: str, rng: np.random.Generator) -> list[str]:
    """Split ``text`` into short phrases (2-4 English words, 1-3 Korean eojeol), never across
    sentence punctuation; each phrase later gets its own pitch offset."""
    lo, hi = (1, 3) if language == "ko" else (2, 4)
    words = text.split()
    phrases: list[str] = []
    current: list[str] = []
    target = int(rng.integers(lo, hi + 1))
    for word in words:
        current.append(word)
        if len(current) >= target or word[-1] in ".,!?;:":
            phrases.append(" ".join(current))
            current = []
            target = int(rng.integers(lo, hi + 1))
    if current:
        phrases.append(" ".join(current))
    return phrases


def _contour(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    if kind == "flat":
        c = -4 * u + rng.normal(0, 3, n)
    elif kind == "emphatic":
        peaks = (rng.random(n) < 0.45) * rng.uniform(12, 30, n)
        c = -8 * u + peaks + rng.normal(0, 4, n)
    elif kind == "arc":
        c = rng.uniform(12, 22) * np.sin(np.pi * u) + 8 * u + rng.normal(0, 4, n)
    elif kind == "falling":
        c = -rng.uniform(10, 18) * u + rng.normal(0, 2, n)
    elif kind == "irregular":
        c = rng.normal(0, 14, n)
    elif kind == "falling_wide":
        c = rng.uniform(8, 16) - rng.uniform(28, 40) * u + rng.normal(0, 4, n)
    elif kind == "rising":
        c = rng.normal(6, 5, n)
        c[0] += rng.uniform(12, 28)
        c[-1] += rng.uniform(15, 35)
    else:
        raise ValueError(f"unknown contour {kind!r}")
    return np.clip(np.round(c), -40, 60)


def sample_prosody(emotion: str, speaker: Speaker, n_phrases: int, rng: np.random.Generator) -> Prosody:
    """Draw the prosody of one utterance: the speaker's baseline moved by ``PROFILES[emotion]``,
    with Gaussian jitter, a phrase-level pitch contour and pauses."""
    p = PROFILES[emotion]
    pitch = int(np.clip(round(speaker.pitch + rng.normal(p.pitch, p.pitch_sd)), 0, 99))
    rate = int(np.clip(round(speaker.rate * max(0.5, rng.normal(p.rate, p.rate_sd))), 80, 400))
    range_pct = int(np.clip(round(rng.normal(p.range_pct, p.range_sd)), 10, 200))
    level_db = float(speaker.level_db + rng.normal(p.level_db, p.level_sd))
    contour = tuple(int(v) for v in _contour(p.contour, max(1, n_phrases), rng))
    breaks = []
    for _ in range(max(1, n_phrases)):
        hesitate = rng.random() < p.hesitation
        breaks.append(int(rng.uniform(0.5, 1.0) * p.pause_ms * 1.5) if hesitate else 0)
    tremor = float(max(0.0, rng.normal(p.tremor, p.tremor / 3))) if p.tremor > 0 else 0.0
    return Prosody(
        emotion=emotion,
        pitch=pitch,
        rate=rate,
        range_pct=range_pct,
        level_db=level_db,
        contour=contour,
        pause_ms=round(p.pause_ms * rng.uniform(0.7, 1.3)),
        breaks_ms=tuple(breaks),
        tremor=tremor,
        tremor_hz=float(rng.uniform(5.0, 8.0)) if tremor > 0 else 0.0,
    )


def to_ssml(phrases: list[str], prosody: Prosody) -> str:
    """SSML for espeak-ng ``-m``: a ``range`` envelope around per-phrase ``pitch`` offsets, with
    ``<break>`` after clause punctuation and after hesitation points."""
    parts = [f'<speak><prosody range="{prosody.range_pct}%">']
    for i, phrase in enumerate(phrases):
        offset = prosody.contour[min(i, len(prosody.contour) - 1)]
        parts.append(f'<prosody pitch="{offset:+d}%">{escape(phrase)}</prosody>')
        extra = prosody.breaks_ms[min(i, len(prosody.breaks_ms) - 1)]
        if phrase[-1] in ".,!?;:" and i < len(phrases) - 1:
            extra += prosody.pause_ms
        if extra > 0 and i < len(phrases) - 1:
            parts.append(f'<break time="{extra}ms"/>')
        parts.append(" ")
    parts.append("</prosody></speak>")
    return "".join(parts)


def apply_tremor(x: np.ndarray, sample_rate: int, depth: float, rate_hz: float, phase: float = 0.0) -> np.ndarray:
    """Vocal tremor: a sinusoidal time warp that modulates F0 by about ``±depth`` (relative) at
    ``rate_hz`` (a slight formant wobble comes with it, as in real tremulous voice)."""
    if depth <= 0 or x.size < 2:
        return x
    t = np.arange(x.size, dtype=np.float64)
    amplitude = depth * sample_rate / (2 * math.pi * rate_hz)  # samples of delay swing
    warped = t - amplitude * np.sin(2 * math.pi * rate_hz * t / sample_rate + phase)
    return np.interp(warped, t, x).astype(np.float32)
