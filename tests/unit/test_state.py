"""shared.state.SpeakerBaselines on a real redis-server."""

import numpy as np
import pytest

from shared.settings import load_settings
from shared.speaker_norm import FrameStatistics
from shared.state import SpeakerBaselines, StateStore
from tests.unit.conftest import REDIS_PASSWORD

DIM = 3


@pytest.fixture
def state(tmp_path, redis_port):
    s = load_settings(home=tmp_path)
    s.redis.port, s.redis.password = redis_port, REDIS_PASSWORD
    store = StateStore(s)
    store.redis.flushdb()
    yield store
    store.close()


def utterance(level: float, frames: int = 4) -> FrameStatistics:
    rows = np.full((frames, DIM), level) + np.arange(frames)[:, None]
    return FrameStatistics.of_utterance(rows, np.ones(frames, bool))


def test_a_baseline_sums_the_speakers_last_window_utterances_before_this_one(state):
    baselines = SpeakerBaselines(state, "speech_encoder", window=2, ttl_s=600)
    said = [utterance(float(i)) for i in range(5)]
    # utterances 0..4 of the agent, interleaved with the customer's, over three batches
    out = baselines.record([("c", "agent", 0, said[0]), ("c", "customer", 1, utterance(50.0))], DIM)
    assert [b.utterances for b in out] == [0, 0]
    out = baselines.record([("c", "agent", 2, said[1]), ("c", "agent", 3, said[2])], DIM)
    assert out[0].utterances == 1 and out[0].frames == 4  # utterance 0 only: not the customer's
    np.testing.assert_allclose(out[1].total, (said[0] + said[1]).total)  # an earlier item of the same batch counts
    [fourth] = baselines.record([("c", "agent", 5, said[3])], DIM)
    np.testing.assert_allclose(fourth.total, (said[1] + said[2]).total)  # the window: the last 2 before index 5
    # a replay of index 3 after later utterances: the same baseline as the first time
    [replayed] = baselines.record([("c", "agent", 3, said[2])], DIM)
    np.testing.assert_allclose(replayed.total, (said[0] + said[1]).total)
    # an utterance without frames gets a baseline but takes no place in the window
    silent = FrameStatistics.of_utterance(np.ones((4, DIM)), np.zeros(4, bool))
    [quiet] = baselines.record([("c", "agent", 6, silent)], DIM)
    np.testing.assert_allclose(quiet.total, (said[2] + said[3]).total)
    [after] = baselines.record([("c", "agent", 8, said[4])], DIM)
    np.testing.assert_allclose(after.total, (said[2] + said[3]).total)
    # another call of the same speaker role starts afresh
    assert baselines.record([("d", "agent", 7, said[4])], DIM)[0].utterances == 0


def test_a_calls_memory_is_bounded_and_expires(state):
    baselines = SpeakerBaselines(state, "speech_encoder", window=3, ttl_s=600)
    for i in range(20):
        baselines.record([("c", "agent", i, utterance(float(i)))], DIM)
    key = state.key("speech_encoder", "speaker", "c", "agent")
    assert sorted(int(k) for k in state.redis.hkeys(key)) == list(range(14, 20))  # 2 x window kept
    assert 0 < state.redis.ttl(key) <= 600


def test_frame_statistics_round_trip_and_pool():
    a, b = utterance(1.0), utterance(-2.0, frames=2)
    again = FrameStatistics.from_bytes((a + b).to_bytes())
    assert (again.utterances, again.frames) == (2, 6)
    rows = np.concatenate(
        [np.full((4, DIM), 1.0) + np.arange(4)[:, None], np.full((2, DIM), -2.0) + np.arange(2)[:, None]]
    )
    mean, var = again.mean_var()
    np.testing.assert_allclose(mean, rows.mean(0))
    np.testing.assert_allclose(var, rows.var(0))
    silent = FrameStatistics.of_utterance(np.ones((4, DIM)), np.zeros(4, bool))
    assert (silent.utterances, silent.frames) == (0, 0) and np.all(silent.mean_var()[1] == 0)
    with pytest.raises(ValueError, match="16 \\+ 8"):
        FrameStatistics.from_bytes(b"short")
