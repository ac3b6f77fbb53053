"""The speech encoding service with an in-memory cache and a fake Triton ``speech_encoder`` model."""

from contextlib import contextmanager

import numpy as np
import pytest

from services import triton_service
from services.speech_encoder import SpeechEncoderService
from shared.contracts import ArrayPayload, SpeechFeatures, Utterance
from shared.metrics import ServiceMetrics
from shared.runtime import Context, Reject, is_dependency_failure
from shared.settings import load_settings
from shared.state import StateUnavailable
from shared.triton_client import TritonError

FRAMES, DIM = 8, 4


class MemoryCache:
    """The FeatureCache interface over a dict (``down`` makes it miss and refuse writes)."""

    def __init__(self):
        self.values: dict[str, bytes] = {}
        self.down = False

    def get_many(self, keys):
        return [None if self.down else self.values.get(k) for k in keys]

    def put_many(self, items, ttl_s=None):
        if self.down:
            return False
        self.values.update(items)
        return True

    def get(self, key):
        return self.get_many([key])[0]

    def put(self, key, value, ttl_s=None):
        return self.put_many([(key, value)], ttl_s)


class MemoryState:
    """The StateStore's ``guard()`` over the cache's dict, where the ASR service puts utterance audio,
    and the hash commands the speaker baselines use (``tests/unit/test_state.py`` runs those on a
    real redis-server)."""

    ttl_s = 3600

    def __init__(self, cache: MemoryCache):
        self.cache = cache
        self.down = False
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    @staticmethod
    def key(*parts: str) -> str:
        return ":".join(("emotion:state", *parts))

    @contextmanager
    def guard(self):
        if self.down:
            raise StateUnavailable("redis state unavailable: Timeout reading from socket")
        yield self

    def mget(self, keys):
        return [self.cache.values.get(k) for k in keys]

    def pipeline(self, transaction=False):
        state, ops = self, []

        class Pipeline:
            def __getattr__(self, name):
                return lambda *args: ops.append((name, args))

            def execute(self):
                out = []
                for name, (key, *rest) in ops:
                    h = state.hashes.setdefault(key, {})
                    if name == "hset":
                        out.append(int(h.setdefault(rest[0].encode(), rest[1]) is rest[1]))
                        h[rest[0].encode()] = rest[1]
                    elif name == "hgetall":
                        out.append(dict(h))
                    elif name == "hdel":
                        out.append(sum(h.pop(f.encode(), None) is not None for f in rest))
                    else:  # expire
                        out.append(True)
                return out

        return Pipeline()


class FakeSpeechEncoder:
    """Frame ``f`` of a row holds the row's mean sample plus ``f``; one frame per 0.02 s of audio."""

    def __init__(self):
        self.rows: list[np.ndarray] = []
        self.fail: TritonError | None = None

    def wait_ready(self):
        pass

    def parameters(self):
        return {"model_version": "fake-encoder-1"}

    def infer(self, inputs, outputs):
        if self.fail is not None:
            raise self.fail
        audio, lengths = inputs["AUDIO"], inputs["LENGTH"][:, 0]
        assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
        rows = [audio[r, :n] for r, n in enumerate(lengths)]
        self.rows += rows
        frames = np.zeros((len(rows), FRAMES, DIM), np.float16)
        mask = np.zeros((len(rows), FRAMES), bool)
        times = np.zeros((len(rows), FRAMES, 2), np.float32)
        for r, row in enumerate(rows):
            n = min(FRAMES, max(1, row.size // 320))
            frames[r, :n] = row.mean() + np.arange(n)[:, None]
            mask[r, :n] = True
            times[r, :n, 0], times[r, :n, 1] = np.arange(n) * 0.02, np.arange(1, n + 1) * 0.02
        return {"FRAMES": frames, "MASK": mask, "FRAME_TIMES": times}

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    model = FakeSpeechEncoder()
    monkeypatch.setattr(triton_service, "TritonModel", lambda settings, name: model)
    return model


@pytest.fixture
def service(tmp_path, fake):
    s = load_settings(home=tmp_path)
    svc = SpeechEncoderService(s)
    cache = MemoryCache()
    svc.setup(
        Context(
            settings=s, metrics=ServiceMetrics("speech_encoder"), cache=cache, state=MemoryState(cache), instance_id="t"
        )
    )
    return svc


def pcm(seconds: float, level: int) -> np.ndarray:
    return np.full(int(seconds * 16000), level, np.int16)


def utterance(i: int, audio: np.ndarray | None = None, key: str | None = None) -> Utterance:
    return Utterance(
        call_id="c",
        utterance_id=f"c:{i:05d}",
        index=i,
        start=0,
        end=1,
        audio_key=key,
        audio=None if audio is None else ArrayPayload.from_array(audio),
    )


def test_features_from_redis_audio_are_encoded_once_then_cached(service, fake):
    service.ctx.cache.put("emotion:audio:c:00000", pcm(0.1, 1000).tobytes())
    service.ctx.cache.put("emotion:audio:c:00001", pcm(0.05, -2000).tobytes())
    batch = [utterance(0, key="emotion:audio:c:00000"), utterance(1, key="emotion:audio:c:00001")]
    [[first], [second]] = service.process(batch)
    assert isinstance(first, SpeechFeatures) and first.utterance_id == "c:00000" and not first.cached
    assert first.model_version == "fake-encoder-1"
    frames, mask, times = first.frames.to_array(), first.mask.to_array(), first.frame_times.to_array()
    assert frames.dtype == np.float16 and frames.shape == (FRAMES, DIM) and mask.sum() == 5
    np.testing.assert_allclose(frames[0], 1000 / 32768, atol=1e-3)
    assert times[4].tolist() == pytest.approx([0.08, 0.10])
    assert second.mask.to_array().sum() == 2 and second.frames.to_array()[0, 0] < 0
    assert [r.size for r in fake.rows] == [1600, 800]  # one request, unpadded lengths
    # the same audio again (a replay): from the cache, no inference
    [[again], _] = service.process(batch)
    assert again.cached and len(fake.rows) == 2
    assert np.array_equal(again.frames.to_array(), frames)
    assert service.ctx.metrics.cache.labels("speech_encoder", "hit")._value.get() == 2


def test_inline_audio_is_used_when_redis_lost_it(service, fake):
    [[f]] = service.process([utterance(3, audio=pcm(0.1, 500), key="emotion:audio:c:00003")])
    assert f.mask.to_array().sum() == 5 and len(fake.rows) == 1


def test_missing_or_empty_audio_is_rejected_and_the_rest_flows(service, fake):
    service.ctx.cache.put("emotion:audio:c:00001", pcm(0.1, 10).tobytes())
    results = service.process(
        [
            utterance(0, key="emotion:audio:c:00000"),
            utterance(1, key="emotion:audio:c:00001"),
            utterance(2),
            utterance(3, audio=np.zeros(0, np.int16)),
        ]
    )
    assert isinstance(results[0], Reject) and results[0].reason == "utterance audio missing or expired"
    assert isinstance(results[1], list) and results[1][0].utterance_id == "c:00001"
    assert isinstance(results[2], Reject) and "missing" in results[2].reason
    assert isinstance(results[3], Reject) and "empty" in results[3].reason


def test_triton_down_retries_the_batch(service, fake):
    fake.fail = TritonError("speech_encoder: unavailable", retryable=True)
    with pytest.raises(TritonError) as failure:
        service.process([utterance(0, audio=pcm(0.1, 1))])
    assert is_dependency_failure(failure.value)  # the runtime retries the batch


def test_redis_not_answering_for_the_audio_retries_the_batch_never_loses_the_utterance(service, fake):
    """Seen in a soak: a 0.5 s cache timeout on a loaded host read as "audio missing" dead-lettered
    utterances.  The audio is state: a Redis that does not answer is a dependency failure."""
    service.ctx.cache.put("emotion:audio:c:00000", pcm(0.1, 10).tobytes())
    service.ctx.cache.down = True  # the feature cache bypassed too: the audio must not depend on it
    service.ctx.state.down = True
    with pytest.raises(StateUnavailable) as failure:
        service.process([utterance(0, key="emotion:audio:c:00000")])
    assert is_dependency_failure(failure.value)
    service.ctx.state.down = False
    [[f]] = service.process([utterance(0, key="emotion:audio:c:00000")])
    assert f.utterance_id == "c:00000"


def test_each_utterance_carries_its_speakers_baseline_from_earlier_utterances_only(service, fake):
    def said(i: int, speaker: str, level: int) -> Utterance:
        return Utterance(
            call_id="c",
            utterance_id=f"c:{i:05d}",
            index=i,
            speaker=speaker,
            start=i,
            end=i + 1,
            audio=ArrayPayload.from_array(pcm(0.1, level)),
        )

    agent = [said(0, "agent", 1000), said(2, "agent", 3000), said(3, "agent", -500)]
    customer = said(1, "customer", 2000)
    [[a0], [c1], [a2]] = service.process([agent[0], customer, agent[1]])
    assert a0.speaker_baseline.utterances == 0 and c1.speaker_baseline.utterances == 0  # each speaker's first
    first = a0.frames.to_array()[a0.mask.to_array()].astype(np.float64)
    assert a2.speaker_baseline.utterances == 1  # the agent's first utterance only, not the customer's
    np.testing.assert_allclose(a2.speaker_baseline.mean.to_array(), first.mean(0), rtol=1e-5)
    np.testing.assert_allclose(a2.speaker_baseline.var.to_array(), first.var(0), rtol=1e-4, atol=1e-6)
    [[a3]] = service.process([agent[2]])
    both = np.concatenate([first, a2.frames.to_array()[a2.mask.to_array()].astype(np.float64)])
    assert a3.speaker_baseline.utterances == 2
    np.testing.assert_allclose(a3.speaker_baseline.mean.to_array(), both.mean(0), rtol=1e-5)
    # a replay of utterance 2 after 3 was processed gets the same baseline as the first time
    [[again]] = service.process([agent[1]])
    assert again.speaker_baseline == a2.speaker_baseline
