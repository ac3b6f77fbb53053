"""training.speakers: the speaker baselines training and evaluation give each record, as serving would."""

from types import SimpleNamespace

import numpy as np
import pytest

from shared.speaker_norm import FrameStatistics
from training.speakers import attach_baselines, speaker_prior

DIM = 2


def record(level: float, speaker: str | None, call: str | None = None, voiced: bool = True, rid: str = ""):
    frames = np.full((4, DIM), level, np.float16) + np.arange(4, dtype=np.float16)[:, None]
    return SimpleNamespace(
        id=rid or f"{speaker}-{level}",
        speaker=speaker,
        call_id=call,
        speech_frames=frames,
        speech_mask=np.full(4, voiced),
        speaker_count=0.0,
        speaker_mean=None,
        speaker_var=None,
    )


def pooled(records) -> FrameStatistics:
    return FrameStatistics.sum([FrameStatistics.of_utterance(r.speech_frames, r.speech_mask) for r in records], DIM)


def test_a_call_accrues_its_speakers_baselines_in_corpus_order_within_the_window():
    agent = [record(float(i), "agent", "c1") for i in range(4)]
    customer = [record(10.0 + i, "customer", "c1") for i in range(2)]
    other_call = record(20.0, "agent", "c2")
    silent = record(0.0, "agent", "c1", voiced=False, rid="silent")
    records = [agent[0], customer[0], agent[1], silent, customer[1], agent[2], agent[3], other_call]
    attach_baselines(records, window=2)
    assert [r.speaker_count for r in agent] == [0, 1, 2, 2]
    assert customer[1].speaker_count == 1 and other_call.speaker_count == 0 and silent.speaker_count == 0
    np.testing.assert_allclose(agent[3].speaker_mean, pooled(agent[1:3]).mean_var()[0])  # the last 2 only
    np.testing.assert_allclose(agent[3].speaker_var, pooled(agent[1:3]).mean_var()[1], rtol=1e-5)
    np.testing.assert_allclose(customer[1].speaker_mean, pooled(customer[:1]).mean_var()[0])


def test_clips_without_calls_form_random_sessions_of_one_speaker():
    clips = {s: [record(float(i), s, rid=f"{s}{i}") for i in range(40)] for s in ("a", "b")}
    records = clips["a"] + clips["b"]
    attach_baselines(records, window=100, session_lengths=(5, 5))
    counts = sorted(r.speaker_count for r in records)
    assert counts == sorted([float(k) for k in range(5)] * 16)  # 16 sessions of 5, each starting at the prior
    first = [r.speaker_count for r in records]
    attach_baselines(records, window=100, session_lengths=(5, 5))
    assert [r.speaker_count for r in records] == first  # the evaluation draw is fixed ...
    alone = clips["b"]  # ... and a speaker's draw is its own: the same without the other speaker
    attach_baselines(alone, window=100, session_lengths=(5, 5))
    assert [r.speaker_count for r in alone] == first[40:]
    attach_baselines(records, window=100, rng=np.random.default_rng(7), session_lengths=(5, 5))
    assert [r.speaker_count for r in records] != first  # training draws new sessions
    # a session never mixes speakers: every baseline lies within its own speaker's range of levels
    for r in records:
        if r.speaker_count:
            assert r.speaker_mean.min() >= 0 and r.speaker_mean.max() <= 39 + 3


def test_the_prior_is_the_mean_speaker_and_the_within_speaker_variance():
    records = [record(0.0, "a"), record(2.0, "a"), record(10.0, "b"), record(0.0, None, voiced=False, rid="x")]
    mean, var = speaker_prior(records)
    a, b = pooled(records[:2]).mean_var(), pooled(records[2:3]).mean_var()
    np.testing.assert_allclose(mean, (a[0] + b[0]) / 2)
    np.testing.assert_allclose(var, (a[1] + b[1]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="no record has speech"):
        speaker_prior([records[3]])
