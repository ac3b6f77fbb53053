"""Speaker baselines in training and evaluation: what the speech encoder service computes live.

Serving judges an utterance's voice against the same speaker's earlier utterances in the call
(:class:`shared.state.SpeakerBaselines`: the last ``models.speaker_window`` of them, none for the
speaker's first utterance). Training and evaluation give every :class:`~training.features.FeatureRecord`
the same baseline (``speaker_count`` / ``speaker_mean`` / ``speaker_var``), from
:class:`shared.speaker_norm.FrameStatistics` summed the same way, over a *session*:

* an example with a ``call_id`` (a call, a dialogue) belongs to the session of its call and
  speaker, in corpus order -- exactly what the service sees;
* an example without one (RAVDESS, CREMA-D, TESS: a speaker's clips, no calls) belongs to a
  simulated call: the speaker's clips in a random order, cut into sessions of a random length in
  ``session_lengths`` (so that a speaker's first utterance, judged by the prior alone, is as common
  as in short calls). Training draws new sessions every epoch (:func:`attach_baselines` with the
  epoch's generator); evaluation uses one fixed draw (``seed`` 0), so a figure is reproducible,
  and each speaker's draw is its own, so it is the same whichever speakers are evaluated with it.

:func:`speaker_prior` fits the model's prior on the training records: the mean of the speakers'
frame means and their pooled within-speaker frame variance.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.speaker_norm import FrameStatistics

__all__ = ["SESSION_LENGTHS", "attach_baselines", "speaker_prior", "utterance_statistics"]

SESSION_LENGTHS = (1, 24)
"""Utterances per speaker in a simulated call (inclusive range), for corpora without calls."""

_STATS = "_frame_statistics"


def utterance_statistics(record: Any) -> FrameStatistics:
    """The record's own frame statistics (computed once, kept on the record)."""
    stats = getattr(record, _STATS, None)
    if stats is None:
        stats = FrameStatistics.of_utterance(record.speech_frames, record.speech_mask)
        object.__setattr__(record, _STATS, stats)
    return stats


def _speaker(record: Any) -> str:
    return str(getattr(record, "speaker", None) or getattr(record, "id", ""))


def _sessions(records: Sequence[Any], draw: int, lengths: tuple[int, int]) -> list[list[int]]:
    """Indices of ``records`` grouped into sessions, each in the order its baselines accrue. A
    speaker's simulated sessions come from a generator of its own (``draw`` and the speaker's name),
    so they do not depend on which other speakers are evaluated beside it."""
    by_call: dict[tuple[str, str], list[int]] = defaultdict(list)
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if not utterance_statistics(r).utterances:
            continue  # no speech: neither has nor gives a baseline
        call = getattr(r, "call_id", None)
        if call:
            by_call[(str(call), _speaker(r))].append(i)
        else:
            by_speaker[_speaker(r)].append(i)
    sessions = list(by_call.values())
    lo, hi = lengths
    for speaker in sorted(by_speaker):
        rng = np.random.default_rng([draw, zlib.crc32(speaker.encode())])
        order = [by_speaker[speaker][k] for k in rng.permutation(len(by_speaker[speaker]))]
        while order:
            n = int(rng.integers(lo, hi + 1))
            sessions.append(order[:n])
            order = order[n:]
    return sessions


def attach_baselines(
    records: Sequence[Any],
    window: int,
    rng: np.random.Generator | None = None,
    session_lengths: tuple[int, int] = SESSION_LENGTHS,
) -> None:
    """Set each record's ``speaker_count`` / ``speaker_mean`` / ``speaker_var``: the statistics of
    the last ``window`` earlier utterances of its session (none: count 0). ``rng`` draws the
    simulated sessions of records without a call (default: a fixed draw, seed 0)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    draw = 0 if rng is None else int(rng.integers(2**32))
    for r in records:
        r.speaker_count, r.speaker_mean, r.speaker_var = 0.0, None, None
    for session in _sessions(records, draw, session_lengths):
        seen: list[FrameStatistics] = []
        for i in session:
            record = records[i]
            earlier = seen[-window:]
            if earlier:
                total = FrameStatistics.sum(earlier, earlier[0].total.size)
                mean, var = total.mean_var()
                record.speaker_count = float(total.utterances)
                record.speaker_mean, record.speaker_var = mean.astype(np.float32), var.astype(np.float32)
            seen.append(utterance_statistics(record))


def speaker_prior(records: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, var)`` float32 ``[dim]``: the mean of the speakers' pooled frame means and the mean
    of their frame variances about their own means (speakers = ``speaker``, else each record alone)."""
    by_speaker: dict[str, FrameStatistics] = {}
    for r in records:
        stats = utterance_statistics(r)
        if stats.utterances:
            key = _speaker(r)
            by_speaker[key] = by_speaker[key] + stats if key in by_speaker else stats
    if not by_speaker:
        raise ValueError("no record has speech: the speaker prior needs speech frames")
    pairs = [s.mean_var() for s in by_speaker.values()]
    mean = np.mean([m for m, _ in pairs], axis=0)
    var = np.mean([v for _, v in pairs], axis=0)
    return mean.astype(np.float32), var.astype(np.float32)
