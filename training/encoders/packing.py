"""Several utterances per Whisper window: the plan, the packed audio and the words given back.

faster-whisper encodes 30 s of audio for every call, however short the utterance: a 3-second
utterance pays for the encoder on ten times its length (``models.asr_window_s`` now shortens that
window to 10 s, which took most of packing's gain: docs/benchmarks.md). When several utterances wait for Whisper
at once, :func:`plan_windows` packs those of one language, in arrival order, into as few windows as
fit (each utterance followed by ``gap_s`` of silence, at most ``max_window_s`` per window);
:func:`assemble` lays one window's audio out; Whisper transcribes the window once; and
:func:`split_words` gives every recognised word back to the utterance it was spoken in, on that
utterance's own clock. :meth:`training.encoders.asr.Transcriber.transcribe_many` runs the three.

The edges, each decided here once:

* **A word that straddles a gap** goes to the utterance its end lies in (Whisper stretches the
  first word after a silence back into the silence), its times clipped to that utterance.
* **A word in a gap**, overlapping no utterance even with ``slack_s`` of tolerance on each side, is
  text Whisper invented in the silence between utterances: it is dropped.
* **An utterance longer than a window** is transcribed alone (Whisper then slides its own windows).
* **Utterances of different languages** never share a window; an utterance whose language is not
  known yet is detected alone before it is packed (the caller's job: ``transcribe_many`` does it).
* **One utterance** makes a window of its own: nothing waits for others to arrive, so at low load
  latency is what it was, and windows fill only when utterances queue.

Where it runs: the ``asr`` Triton model (the requests a busy instance finds queued) and the packed
ASR ceiling of ``emotion bench``. Training's feature extraction transcribes one utterance at a time
on purpose: a cached transcript must not depend on which other clips happened to share its window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from .audio import SAMPLE_RATE

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings


class TimedWord(Protocol):
    """A recognised word with its time span in seconds (:class:`training.encoders.asr.Word`, a dataclass)."""

    start: float
    end: float


W = TypeVar("W", bound=TimedWord)

__all__ = ["PackedWindow", "PackingOptions", "assemble", "plan_windows", "split_words"]


@dataclass(frozen=True)
class PackingOptions:
    """How utterances share a Whisper window (``models.asr_packing`` in the settings)."""

    max_window_s: float = 15.0
    """Most audio per window, gaps included; Whisper's own window is 30 s (see ``models.asr_pack_window_s``)."""
    gap_s: float = 0.6
    """Silence after each utterance: long enough that Whisper ends its sentence, short enough to waste little."""
    slack_s: float = 0.15
    """How far a word may reach into a gap and still belong to the utterance beside it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> PackingOptions | None:
        """The configured packing (``models.asr_packing``, ``asr_pack_window_s``, ``asr_pack_gap_s``); None when off."""
        m = settings.models
        return cls(max_window_s=m.asr_pack_window_s, gap_s=m.asr_pack_gap_s) if m.asr_packing else None

    def __post_init__(self) -> None:
        if not 0 < self.max_window_s <= 30.0:
            raise ValueError(f"max_window_s={self.max_window_s} must lie in (0, 30]")
        if not 0 <= self.slack_s < self.gap_s / 2 or self.gap_s >= self.max_window_s:
            raise ValueError(f"need 0 <= slack_s < gap_s / 2 and gap_s < max_window_s, got {self}")


@dataclass(frozen=True)
class PackedWindow:
    """Utterances transcribed together: which rows, where each starts in the window, how long it is."""

    rows: tuple[int, ...]
    """Indices into the utterances given to :func:`plan_windows`, in window order."""
    offsets: tuple[float, ...]
    """Seconds from the window's start to each row's first sample."""
    durations: tuple[float, ...]
    language: str | None

    @property
    def length_s(self) -> float:
        return self.offsets[-1] + self.durations[-1]


def plan_windows(
    durations: Sequence[float], languages: Sequence[str | None], options: PackingOptions = PackingOptions()
) -> list[PackedWindow]:
    """Windows that hold every row once: rows of one language, in their given (arrival) order,
    filled greedily until the next would not fit; a row longer than a window gets one alone.
    Windows come out in the order of their first row."""
    if len(durations) != len(languages):
        raise ValueError(f"{len(durations)} durations for {len(languages)} languages")
    open_windows: dict[str | None, list[int]] = {}
    filled: dict[str | None, float] = {}
    windows: list[list[int]] = []
    for row, (duration, language) in enumerate(zip(durations, languages, strict=True)):
        need = float(duration) + options.gap_s
        current = open_windows.get(language)
        if current is not None and filled[language] + float(duration) <= options.max_window_s:
            current.append(row)
            filled[language] += need
            continue
        current = [row]
        windows.append(current)
        if float(duration) > options.max_window_s:  # alone; the open window stays open
            continue
        open_windows[language], filled[language] = current, need
    out = []
    for rows in windows:
        offsets, t = [], 0.0
        for row in rows:
            offsets.append(t)
            t += float(durations[row]) + options.gap_s
        out.append(
            PackedWindow(tuple(rows), tuple(offsets), tuple(float(durations[r]) for r in rows), languages[rows[0]])
        )
    return out


def assemble(window: PackedWindow, audios: Sequence[np.ndarray]) -> np.ndarray:
    """The window's 16 kHz audio: each row at its offset, silence (zeros) in the gaps."""
    starts = [round(o * SAMPLE_RATE) for o in window.offsets]
    out = np.zeros(starts[-1] + len(audios[window.rows[-1]]), np.float32)
    for row, start in zip(window.rows, starts, strict=True):
        audio = np.asarray(audios[row], np.float32).reshape(-1)
        out[start : start + audio.size] = audio
    return out


def split_words(words: Sequence[W], window: PackedWindow, slack_s: float) -> list[list[W]]:
    """Each row's words (in the order of ``window.rows``), times shifted to the row's own clock and
    clipped to ``[0, duration]``.

    A word goes to the row whose span (widened by ``slack_s``) holds its *end*: Whisper's word
    alignment stretches the first word after a silence back into it (measured on the Asterisk
    prompts: by 0.1-1.2 s), while a word's end stays within a few hundredths of where it was said.
    A word whose end lies in a gap goes to the row holding its start (a last word that trails
    off); one whose start and end both lie in gaps was invented in the silence and is dropped."""
    spans = [(o - slack_s, o + d + slack_s) for o, d in zip(window.offsets, window.durations, strict=True)]

    def row_at(t: float) -> int | None:
        return next((i for i, (lo, hi) in enumerate(spans) if lo <= t <= hi), None)

    out: list[list[W]] = [[] for _ in window.rows]
    for word in words:
        row = row_at(word.end)
        if row is None:
            row = row_at(word.start)
        if row is None:
            continue
        offset, duration = window.offsets[row], window.durations[row]
        start = min(max(word.start - offset, 0.0), duration)
        end = min(max(word.end - offset, start), duration)
        out[row].append(dataclasses.replace(word, start=start, end=end))  # type: ignore[type-var]
    return out
