"""When a call escalates: one rule for the dashboard and ``emotion consume --summary``.

A call escalates when the customer's negative emotion persists over ``turns`` utterances, in
either of two ways:

* a **negative run**: at least ``turns`` consecutive customer utterances labelled with a negative
  emotion (``anger``, ``disgust``, ``fear``, ``sadness`` by default: ``EventSettings.negative_labels``);
* a **rising trend**: the negative probability (the probability mass of the negative labels) rises
  at every step over at least ``turns`` consecutive customer utterances and ends at
  :data:`RISING_MIN_FINAL` or more, even while the labels themselves are not (yet) negative.

:func:`detect_escalation` reports the latest run of each kind; an :class:`Escalation` says where it
began, its labels and length, and whether it is ``ongoing`` (it reaches the last judged utterance).
A call with no customer utterance but mono ones (a mono recording) is judged on its mono utterances.
Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from shared.contracts import EmotionEvent
from shared.settings import EventSettings

__all__ = [
    "ESCALATION_SPEAKER",
    "ESCALATION_TURNS",
    "NEGATIVE_LABELS",
    "RISING_MIN_FINAL",
    "Escalation",
    "detect_escalation",
    "negative_probability",
]

NEGATIVE_LABELS: tuple[str, ...] = EventSettings().negative_labels
"""The default negative labels (the settings' default), for callers without a settings object."""
ESCALATION_SPEAKER = "customer"
"""Whose utterances are judged."""
ESCALATION_TURNS = 3
"""Utterances a negative run or a rising trend must last."""
RISING_MIN_FINAL = 0.5
"""A rising negative probability is an escalation only when it ends at least this high."""
MONO = "mono"
"""The speaker of a call recorded on one channel, judged when the call has no ``speaker`` utterance."""

Kind = Literal["negative_run", "rising"]


@dataclass(frozen=True)
class Escalation:
    """One escalation of a call (see the module docstring)."""

    kind: Kind
    """``negative_run`` (consecutive negative labels) or ``rising`` (growing negative probability)."""
    reason: str
    """Why, for people: e.g. ``3 consecutive negative customer utterances (anger, fear, anger) from 12.5 s``."""
    since: str
    """The utterance id where the run began."""
    at: float
    """That utterance's start (seconds into the call)."""
    labels: tuple[str, ...]
    """The labels of the run's utterances, in time order."""
    length: int
    """Utterances in the run (``>= turns``)."""
    ongoing: bool
    """Whether the run reaches the last judged utterance (the call is escalated now, not only in the past)."""


def negative_probability(event: EmotionEvent, negative: Collection[str] = NEGATIVE_LABELS) -> float:
    """The probability mass of the ``negative`` labels (1 or 0 by the label when the event has no probabilities)."""
    if event.probabilities:
        return sum(p for label, p in event.probabilities.items() if label in negative)
    return 1.0 if event.label in negative else 0.0


def _judged(events: Iterable[EmotionEvent], speaker: str = ESCALATION_SPEAKER) -> list[EmotionEvent]:
    """The utterances the rule looks at: ``speaker``'s (the mono ones when the call has none), de-duplicated
    on ``utterance_id`` (the last copy wins: a replay may carry a newer model's label) and in time order
    (``start``, ``end``, ``utterance_id``)."""
    latest = {e.utterance_id: e for e in events}
    ordered = sorted(latest.values(), key=lambda e: (e.start, e.end, e.utterance_id))
    return [e for e in ordered if e.speaker == speaker] or [e for e in ordered if e.speaker == MONO]


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """``(first, last)`` indices of the maximal stretches where ``flags`` holds."""
    runs, first = [], None
    for i, flag in enumerate(flags):
        if flag and first is None:
            first = i
        elif not flag and first is not None:
            runs.append((first, i - 1))
            first = None
    if first is not None:
        runs.append((first, len(flags) - 1))
    return runs


def detect_escalation(
    events: Iterable[EmotionEvent],
    turns: int = ESCALATION_TURNS,
    speaker: str = ESCALATION_SPEAKER,
    negative: Collection[str] = NEGATIVE_LABELS,
    min_final: float = RISING_MIN_FINAL,
) -> Escalation | None:
    """The escalation of one call's ``events`` (any order, duplicates allowed), or None when it is calm.

    Finds the latest negative run and the latest rising trend of at least ``turns`` of the judged
    utterances (``speaker``'s, or the mono ones when the call has none).  When both exist, an ongoing
    one wins over a past one, and a negative run over a rising trend.  So "the last ``turns``
    utterances are all negative" is ``esc and esc.kind == "negative_run" and esc.ongoing``, and
    "ever escalated" is ``esc is not None``.  ``min_final``: where a rising trend must end.
    """
    if turns < 1:
        raise ValueError(f"turns must be at least 1, not {turns}")
    utts = _judged(events, speaker)
    if not utts:
        return None
    who = f"{utts[0].speaker} " if utts[0].speaker != MONO else ""
    last = len(utts) - 1
    found: list[Escalation] = []

    runs = [r for r in _runs([e.label in negative for e in utts]) if r[1] - r[0] + 1 >= turns]
    if runs:
        first, end = runs[-1]
        run = utts[first : end + 1]
        labels = tuple(e.label for e in run)
        found.append(
            Escalation(
                "negative_run",
                f"{len(run)} consecutive negative {who}utterances ({', '.join(labels)}) from {run[0].start:.1f} s",
                run[0].utterance_id,
                run[0].start,
                labels,
                len(run),
                end == last,
            )
        )

    p = [negative_probability(e, negative) for e in utts]
    # flag i: p rises from utterance i to i + 1, so a stretch of flags (a, b) covers utterances a..b+1
    trends = [
        (a, b + 1)
        for a, b in _runs([q > prev for prev, q in zip(p, p[1:])])
        if b + 2 - a >= turns and p[b + 1] >= min_final
    ]
    if trends:
        first, end = trends[-1]
        run = utts[first : end + 1]
        found.append(
            Escalation(
                "rising",
                f"negative probability rising {p[first]:.2f} -> {p[end]:.2f} over {len(run)} {who}utterances "
                f"from {run[0].start:.1f} s",
                run[0].utterance_id,
                run[0].start,
                tuple(e.label for e in run),
                len(run),
                end == last,
            )
        )

    # ongoing first; then the negative run (listed first: sorted is stable)
    return sorted(found, key=lambda esc: not esc.ongoing)[0] if found else None
