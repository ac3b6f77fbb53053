"""The ASR alignment service on a real redis-server, with a fake Triton ``asr`` model.

Chunks go through ``process`` and, like the runtime does once the broker acknowledged the outputs,
``delivered``; a replay without ``delivered`` is a batch whose outputs were not acknowledged.
"""

import time

import numpy as np
import pytest

from deploy.local.process import free_port
from services import triton_service
from services.asr_alignment import AsrAlignmentService, guard_words, hallucination, is_ngram_loop
from shared.cache import FeatureCache
from shared.contracts import ArrayPayload, AudioChunk, Utterance
from shared.metrics import ServiceMetrics
from shared.runtime import Context, Reject, is_dependency_failure, resolve
from shared.settings import SegmentationSettings, load_settings
from shared.state import StateStore
from shared.triton_client import TritonError
from tests.unit.conftest import REDIS_PASSWORD
from shared.audio import resample
from training.data.espeak import synthesize

RATE = 8000
CHUNK = RATE // 2
LISTENING = 0.0
"""``caught_up_since`` of a runtime that has been caught up for as long as anyone can remember."""
PASSWORD = REDIS_PASSWORD


class FakeAsr:
    """The ``asr`` model's interface: one word per row over its middle, text from ``script``."""

    def parameters(self):
        return {"model_version": "whisper-base@test"}

    def __init__(self):
        self.requests: list[int] = []
        """Rows of each request."""
        self.in_flight: list[int] = []
        """Requests sent together by each ``infer_many``."""
        self.script = lambda seconds, language: (
            "hello there",
            [
                {"text": "hello", "start": 0.3, "end": 0.6, "probability": 0.9},
                {"text": "there", "start": 0.7, "end": 0.9, "probability": 0.8},
            ],
        )
        self.fail: TritonError | None = None
        self.window = 1
        """What ``WINDOW`` says: how many utterances shared each row's Whisper window."""

    def wait_ready(self):
        pass

    def infer(self, inputs, outputs):
        if self.fail is not None:
            raise self.fail
        audio, lengths, languages = inputs["AUDIO"], inputs["LENGTH"], inputs["LANGUAGE"]
        assert audio.dtype == np.float32 and lengths.dtype == np.int32 and audio.shape[0] == lengths.shape[0]
        self.requests.append(audio.shape[0])
        import json

        rows = [self.script(int(n) / 16000, lang) for n, lang in zip(lengths[:, 0], languages[:, 0])]
        return {
            "WINDOW": np.full((len(rows), 1), self.window, np.int32),
            "TEXT": np.array([[t.encode()] for t, _ in rows], dtype=object),
            "LANGUAGE": np.array([[(lang or "en").encode()] for lang in languages[:, 0]], dtype=object),
            "WORDS": np.array([[json.dumps(w).encode()] for _, w in rows], dtype=object),
        }

    def submit_many(self, requests, outputs):
        """As Triton: the answers (or the failure) come when the batch waits for them."""
        self.in_flight.append(len(requests))
        fail, answers = self.fail, ([] if self.fail else [self.infer(r, outputs) for r in requests])

        class Answers:
            def wait(self, timeout_s):
                return True

            def result(self):
                if fail is not None:
                    raise fail
                return answers

        return Answers()

    def close(self):
        pass


@pytest.fixture
def settings(tmp_path, redis_port):
    s = load_settings(home=tmp_path)
    s.redis.port, s.redis.password = redis_port, PASSWORD
    return s


@pytest.fixture
def fake_asr(monkeypatch):
    fake = FakeAsr()
    monkeypatch.setattr(triton_service, "TritonModel", lambda settings, name: fake)
    return fake


@pytest.fixture
def make_service(settings, fake_asr):
    """A new service instance on the same Redis each call (a restart)."""
    StateStore(settings).redis.flushdb()

    def make(cache: FeatureCache | None = None, **context) -> AsrAlignmentService:
        """``context``: other :class:`Context` fields (e.g. ``owns``, whose partitions it holds)."""
        svc = AsrAlignmentService(settings)
        svc.setup(
            Context(
                settings=settings,
                metrics=ServiceMetrics("asr_alignment"),
                cache=cache or FeatureCache(settings),
                state=StateStore(settings),
                instance_id="test",
                **context,
            )
        )
        return svc

    return make


def speech(text: str) -> np.ndarray:
    audio, sr = synthesize(text, "en-us")
    audio = resample(audio, sr, RATE)
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def stereo_call():
    """Agent, customer, agent, with pauses; returns interleaved int16 and (speaker, start, end) turns."""
    rng = np.random.default_rng(0)
    turns = [
        ("agent", "Hello, how can I help you today?"),
        ("customer", "My internet has been down since Monday."),
        ("agent", "I am sorry to hear that, let me check."),
    ]
    t, spans, channels = 0.8, [], [[], []]
    for speaker, text in turns:
        s = speech(text)
        ch = 0 if speaker == "agent" else 1
        channels[ch].append((int(t * RATE), s))
        spans.append((speaker, t, t + s.size / RATE))
        t += s.size / RATE + 1.2
    n = int((t + 0.5) * RATE)
    stereo = (rng.standard_normal((n, 2)) * 0.002).astype(np.float32)
    for ch, pieces in enumerate(channels):
        for start, s in pieces:
            stereo[start : start + s.size, ch] += s
    return np.round(stereo * 32767).astype(np.int16).reshape(-1), spans


def chunks(pcm: np.ndarray, call_id: str = "call-1", **extra) -> list[AudioChunk]:
    step = CHUNK * 2
    n = -(-pcm.size // step)
    return [
        AudioChunk(
            call_id=call_id,
            seq=i,
            sample_rate=RATE,
            channels=2,
            channel_roles=["agent", "customer"],
            pcm=ArrayPayload.from_array(pcm[i * step : (i + 1) * step]),
            end_of_call=i == n - 1,
            language="en",
            **extra,
        )
        for i in range(n)
    ]


def run(svc: AsrAlignmentService, batch: list[AudioChunk], deliver: bool = True) -> list:
    results = resolve(svc.process(batch))
    assert len(results) == len(batch)
    if deliver:
        svc.delivered([u for r in results if not isinstance(r, Reject) for u in r])
    return results


def utterances_of(results) -> list[Utterance]:
    return [u for r in results if not isinstance(r, Reject) for u in r]


def feed(svc, all_chunks, batch=4) -> list[Utterance]:
    out = []
    for i in range(0, len(all_chunks), batch):
        out += utterances_of(run(svc, all_chunks[i : i + batch]))
    return out


def test_a_stereo_call_becomes_ordered_utterances_with_speakers_times_and_audio(
    make_service, stereo_call, fake_asr, settings
):
    pcm, spans = stereo_call
    svc = make_service()
    utts = feed(svc, chunks(pcm))
    assert [u.speaker for u in utts] == [s for s, _, _ in spans]
    assert [u.utterance_id for u in utts] == ["call-1:00000", "call-1:00001", "call-1:00002"]
    assert [u.index for u in utts] == [0, 1, 2]
    for u, (_, start, end) in zip(utts, spans):
        assert start - 0.35 <= u.start <= start + 0.15, (u.start, start)
        assert end - 0.35 <= u.end <= end + 0.35, (u.end, end)
        assert u.text == "hello there" and [w.text for w in u.words] == ["hello", "there"]
        assert u.language == "en" and u.audio is None and u.audio_key == f"emotion:audio:{u.utterance_id}"
        stored = svc.ctx.cache.get(u.audio_key)
        assert stored is not None and len(stored) == 2 * round((u.end - u.start) * 16000)
    assert sum(fake_asr.requests) == 3
    assert svc.ctx.metrics.audio_seconds.labels("asr_alignment")._value.get() == pytest.approx(pcm.size / 2 / RATE)
    # the call ended: its channel buffers are gone, its tombstone stays, it is not active any more
    r = svc.ctx.state.redis
    assert not r.exists(svc._channel_key("call-1", 0)) and r.exists(svc._call_key("call-1"))
    assert r.zcard(svc._active_key) == 0
    assert 0 < r.ttl(svc._call_key("call-1")) <= settings.redis.state_ttl_s


def test_utterances_complete_in_one_batch_go_to_triton_together_one_request_each(make_service, stereo_call, fake_asr):
    """One request per utterance, all in flight at once: the asr model's instances decode them in parallel."""
    pcm, _ = stereo_call
    fake_asr.window = 3  # the asr model packed the three into one Whisper window
    svc = make_service()
    utts = utterances_of(run(svc, chunks(pcm)))
    assert len(utts) == 3 and fake_asr.in_flight == [3] and fake_asr.requests == [1, 1, 1]
    # the packing the model reports is on the service's metrics, per decoded utterance
    window = svc.ctx.metrics.asr_window.labels("asr_alignment")
    assert window._sum.get() == 9 and sum(b.get() for b in window._buckets) == 3


def test_audio_streamed_again_is_transcribed_from_the_cache(make_service, stereo_call, fake_asr):
    pcm, _ = stereo_call
    svc = make_service()
    first = feed(svc, chunks(pcm, call_id="first"))
    assert len(fake_asr.requests) == 3
    again = feed(svc, chunks(pcm, call_id="again"))
    assert len(fake_asr.requests) == 3, "the same audio went to Whisper again"
    assert [(u.text, u.words, u.start, u.end) for u in again] == [(u.text, u.words, u.start, u.end) for u in first]
    assert [u.utterance_id for u in again] == ["again:00000", "again:00001", "again:00002"]
    hits = svc.ctx.metrics.cache.labels("asr_alignment", "hit")._value.get()
    misses = svc.ctx.metrics.cache.labels("asr_alignment", "miss")._value.get()
    assert (hits, misses) == (3, 3)
    # another language asked for is another transcript
    feed(svc, [c.model_copy(update={"language": "ko"}) for c in chunks(pcm, call_id="korean")])
    assert len(fake_asr.requests) == 6


def test_duplicate_chunks_are_skipped_and_unacknowledged_batches_replay_identically(make_service, stereo_call):
    pcm, _ = stereo_call
    all_chunks = chunks(pcm)
    svc = make_service()
    first = feed(svc, all_chunks[:12])
    assert len(first) == 1
    # a replay of chunks already taken in yields nothing
    assert utterances_of(run(svc, all_chunks[8:12])) == []
    assert svc.ctx.metrics.audio_chunks.labels("asr_alignment", "duplicate")._value.get() == 4
    # a batch whose outputs were not acknowledged leaves the state as it was: the replay gives the same
    batch = all_chunks[12:20]
    lost = utterances_of(run(svc, batch, deliver=False))
    svc.abandon()  # what the runtime does when a batch's outputs are not acknowledged
    again = utterances_of(run(svc, batch))
    assert lost and [(u.utterance_id, u.start, u.end, u.speaker) for u in lost] == [
        (u.utterance_id, u.start, u.end, u.speaker) for u in again
    ]


def test_batches_in_flight_go_on_from_the_state_the_earlier_ones_left(make_service, stereo_call):
    """Pipelined: every batch is processed before any is delivered; the same utterances as one
    batch at a time, and each batch's own state reaches Redis when it is delivered."""
    pcm, _ = stereo_call
    key = lambda utts: [(u.index, u.speaker, u.start, u.end, u.text) for u in utts]  # noqa: E731
    reference = feed(make_service(), chunks(pcm, call_id="reference"))
    svc = make_service()
    all_chunks = chunks(pcm)
    in_flight = [svc.process(all_chunks[i : i + 4]) for i in range(0, len(all_chunks), 4)]
    r = svc.ctx.state.redis
    assert not r.exists(svc._call_key("call-1")), "state written before any delivery"
    results = [d.result() for d in in_flight]
    svc.delivered(utterances_of(results[0]))
    assert int(r.hget(svc._call_key("call-1"), "next_seq")) == 4  # the first batch's state, not the newest
    for res in results[1:]:
        svc.delivered(utterances_of(res))
    assert key(utterances_of([x for res in results for x in res])) == key(reference)
    assert not r.exists(svc._channel_key("call-1", 0)) and r.zcard(svc._active_key) == 0 and not svc._live


def test_batches_in_flight_dropped_after_a_failure_are_replayed_from_the_delivered_state(make_service, stereo_call):
    pcm, _ = stereo_call
    key = lambda utts: [(u.index, u.speaker, u.start, u.end) for u in utts]  # noqa: E731
    reference = feed(make_service(), chunks(pcm, call_id="reference"))
    svc = make_service()
    all_chunks = chunks(pcm)
    batches = [all_chunks[i : i + 4] for i in range(0, len(all_chunks), 4)]
    first = resolve(svc.process(batches[0]))
    svc.delivered(utterances_of(first))
    for b in batches[1:4]:
        svc.process(b)  # in flight when a dependency fails
    svc.abandon()
    replayed = [u for b in batches[1:] for u in utterances_of(run(svc, b))]
    assert key(utterances_of(first) + replayed) == key(reference)


def test_a_restart_mid_call_loses_no_audio(make_service, stereo_call):
    pcm, _ = stereo_call
    reference = feed(make_service(), chunks(pcm, call_id="uninterrupted"))
    all_chunks = chunks(pcm)
    first = make_service()
    half = feed(first, all_chunks[:9])
    second = AsrAlignmentService(first.ctx.settings)
    second.setup(
        Context(
            settings=first.ctx.settings,
            metrics=ServiceMetrics("asr_alignment"),
            cache=FeatureCache(first.ctx.settings),
            state=StateStore(first.ctx.settings),
            instance_id="b",
        )
    )
    rest = feed(second, all_chunks[9:], batch=3)
    assert half and rest
    key = [(u.index, u.speaker, u.start, u.end) for u in reference]
    assert [(u.index, u.speaker, u.start, u.end) for u in half + rest] == key


def test_bad_chunks_are_rejected_with_a_reason(make_service, stereo_call):
    pcm, _ = stereo_call
    good = chunks(pcm)
    svc = make_service()
    broken = good[0].model_copy(update={"pcm": ArrayPayload(dtype="int16", shape=[10], data="AAAA")})
    wrong_rate = good[1].model_copy(update={"sample_rate": 16000})
    roles = good[1].model_copy(update={"channel_roles": ["agent"]})
    floats = good[1].model_copy(update={"pcm": ArrayPayload.from_array(np.array([np.nan, 0.0], np.float32))})
    results = run(svc, [broken, good[0], wrong_rate, roles, floats, good[1]])
    assert isinstance(results[0], Reject) and "pcm undecodable" in results[0].reason
    assert results[1] == []
    assert isinstance(results[2], Reject) and "format changed" in results[2].reason
    assert isinstance(results[3], Reject) and "channel roles" in results[3].reason
    assert isinstance(results[4], Reject) and "NaN" in results[4].reason
    assert results[5] == []
    feed(svc, good[2:])
    late = good[-1].model_copy(update={"seq": len(good), "end_of_call": False})
    [after_end] = run(svc, [late])
    assert isinstance(after_end, Reject) and "after the end of call" in after_end.reason


def test_a_gap_in_the_chunks_is_counted_not_fatal(make_service, stereo_call):
    pcm, _ = stereo_call
    all_chunks = chunks(pcm)
    svc = make_service()
    utts = feed(svc, all_chunks[:5] + all_chunks[7:])
    assert svc.ctx.metrics.audio_chunks.labels("asr_alignment", "gap")._value.get() == 1
    assert [u.index for u in utts] == list(range(len(utts))) and utts


def test_a_late_chunk_of_a_gap_is_dead_lettered_and_a_duplicate_skipped(make_service, stereo_call):
    pcm, _ = stereo_call
    all_chunks = chunks(pcm)
    svc = make_service()
    feed(svc, all_chunks[:5] + all_chunks[7:9])
    late, again = run(svc, [all_chunks[5], all_chunks[8]])
    assert isinstance(late, Reject) and "chunk 5" in late.reason and "arrived after chunk 8" in late.reason
    assert again == []  # a duplicate of a chunk taken in: skipped, no second utterance
    [twice] = run(svc, [all_chunks[5]])
    assert twice == []  # the late chunk sent again is a duplicate now


@pytest.mark.parametrize(
    "dtype, scale", [("int8", 127), ("uint8", None), ("int32", 2**31 - 1), ("float16", 1.0), ("float32", 1.0)]
)
def test_other_sample_types_are_converted_to_the_same_audio(dtype, scale):
    from services.asr_alignment import decode_pcm

    x = np.array([0.0, 0.5, -0.5, 0.25], np.float32)
    raw = np.round(x * 127 + 128).astype(np.uint8) if dtype == "uint8" else (x * scale).astype(dtype)
    chunk = AudioChunk(call_id="c", seq=0, sample_rate=8000, channels=1, pcm=ArrayPayload.from_array(raw))
    assert np.allclose(decode_pcm(chunk)[:, 0], x, atol=1 / 100)


def test_float_audio_beyond_full_scale_is_clipped_and_other_types_are_rejected():
    from services.asr_alignment import decode_pcm

    loud = AudioChunk(
        call_id="c",
        seq=0,
        sample_rate=8000,
        channels=1,
        pcm=ArrayPayload.from_array(np.array([3.0, -7.0, 0.5], np.float32)),
    )
    assert decode_pcm(loud)[:, 0].tolist() == [1.0, -1.0, 0.5]
    for bad in (np.array([1, 2], np.int64), np.array([True], bool), np.array([np.inf], np.float32)):
        chunk = loud.model_copy(update={"pcm": ArrayPayload.from_array(bad)})
        with pytest.raises(Reject):
            decode_pcm(chunk)


def test_chunk_and_call_length_limits(make_service, stereo_call, settings):
    pcm, _ = stereo_call
    all_chunks = chunks(pcm)
    settings.segmentation.max_chunk_s = 0.1
    [too_long] = run(make_service(), all_chunks[:1])
    assert isinstance(too_long, Reject) and "limit is 0.1 s" in too_long.reason
    settings.segmentation.max_chunk_s = 60.0
    settings.segmentation.max_call_s = 3 * CHUNK / RATE
    results = run(make_service(), [c.model_copy(update={"call_id": "limited"}) for c in all_chunks[:5]])
    assert [isinstance(r, Reject) for r in results] == [False, False, False, True, True]
    assert "exceeds the limit" in results[3].reason and "max_call_s" in results[3].reason


def test_a_silent_call_is_flushed_by_tick_even_after_a_restart(make_service, stereo_call, settings):
    pcm, spans = stereo_call
    all_chunks = chunks(pcm)
    svc = make_service()
    cut = int((spans[1][2] - 0.5) * RATE) // CHUNK  # the stream stops while the customer speaks
    got = feed(svc, all_chunks[:cut])
    assert len(got) == 1
    now = time.time()
    assert svc.tick(now, LISTENING) == []
    restarted = make_service()
    flushed = restarted.tick(now + settings.segmentation.silence_timeout_s + 1, LISTENING)
    assert [(u.utterance_id, u.speaker) for u in flushed] == [("call-1:00001", "customer")]
    assert flushed[0].end == pytest.approx(cut * CHUNK / RATE, abs=0.01)
    content = lambda utts: [u.model_dump(exclude={"message_id", "created_at"}) for u in utts]  # noqa: E731
    restarted.abandon()  # not acknowledged: the runtime drops what the tick computed
    again = restarted.tick(now + 60, LISTENING)
    assert content(again) == content(flushed)  # flushed again, identically
    restarted.delivered(again)
    assert restarted.tick(now + 60, LISTENING) == []
    assert restarted.ctx.state.redis.zcard(restarted._active_key) == 0
    # the call may still go on: its numbering and clock carry on
    later = feed(restarted, all_chunks[cut:])
    assert later[0].index == 2 and later[0].start >= flushed[0].end


def test_a_call_is_not_silent_until_the_service_has_been_caught_up_for_a_whole_timeout(
    make_service, stereo_call, settings
):
    """Seen in the Kafka-restart fault test: the consumer, cut off from the broker, polled nothing,
    the call looked silent and was flushed mid-utterance, and its audio, held up at the publisher,
    came back cut into other utterances.  Silence before the runtime caught up does not count."""
    pcm, spans = stereo_call
    all_chunks = chunks(pcm)
    svc = make_service()
    cut = int((spans[1][2] - 0.5) * RATE) // CHUNK  # the audio stops arriving while the customer speaks
    feed(svc, all_chunks[:cut])
    timeout = settings.segmentation.silence_timeout_s
    now = time.time() + 3 * timeout  # silent for three timeouts ...
    assert (
        svc.tick(now, caught_up_since=now - timeout + 1) == []
    )  # ... but caught up (the broker back) for less than one
    assert svc.ctx.state.redis.zcard(svc._active_key) == 1  # still open, its segmentation untouched
    rest = utterances_of(run(svc, all_chunks[cut:]))  # the held-up audio arrives: cut as if nothing happened
    uninterrupted = feed(make_service(), chunks(pcm, call_id="call-2"))
    assert len(uninterrupted) > 2
    assert [(u.index, u.speaker, u.start, u.end) for u in rest] == [
        (u.index, u.speaker, u.start, u.end) for u in uninterrupted if u.index >= 1
    ]
    assert svc.tick(now, caught_up_since=now - timeout - 1) == []  # ended: nothing left to flush


def test_only_the_instance_that_holds_a_calls_partition_flushes_it(make_service, stereo_call, settings):
    """Another instance may still be working through a backlog of the call's audio."""
    pcm, spans = stereo_call
    all_chunks = chunks(pcm)
    cut = int((spans[1][2] - 0.5) * RATE) // CHUNK
    feed(make_service(), all_chunks[:cut])
    later = time.time() + settings.segmentation.silence_timeout_s + 1

    asked = []
    other = make_service(owns=lambda topic, key: asked.append((topic, key)) or False)
    assert other.tick(later, LISTENING) == []
    assert asked == [("calls.audio", b"call-1")]
    [flushed] = make_service(owns=lambda topic, key: True).tick(later, LISTENING)
    assert flushed.utterance_id == "call-1:00001"


def test_a_call_in_flight_is_not_silent_and_a_call_goes_on_from_a_flush_not_yet_delivered(
    make_service, stereo_call, settings
):
    pcm, spans = stereo_call
    all_chunks = chunks(pcm)
    cut = int((spans[1][2] - 0.5) * RATE) // CHUNK
    svc = make_service()
    feed(svc, all_chunks[: cut - 4])
    in_flight = svc.process(all_chunks[cut - 4 : cut])  # processed, not delivered yet
    later = time.time() + settings.segmentation.silence_timeout_s + 1
    assert svc.tick(later, LISTENING) == []  # its newest audio is in memory, not in Redis
    svc.delivered(utterances_of(in_flight.result()))
    [flushed] = svc.tick(later, LISTENING)  # not delivered yet
    assert flushed.utterance_id == "call-1:00001"
    rest = utterances_of(run(svc, all_chunks[cut:], deliver=False))  # the call goes on from the flushed state
    assert [u.index for u in rest] == [2, 3] and rest[0].start >= flushed.end
    svc.delivered([flushed])  # in the order the runtime completes them
    svc.delivered(rest)
    r = svc.ctx.state.redis
    assert (
        not svc._live
        and not r.exists(svc._channel_key("call-1", 0))
        and int(r.hget(svc._call_key("call-1"), "next_index")) == 4
    )


def test_hallucinated_text_is_blanked_but_the_utterance_is_published(make_service, stereo_call, fake_asr):
    pcm, _ = stereo_call
    fake_asr.script = lambda seconds, lang: (
        "시청해주셔서 감사합니다.",
        [
            {"text": "시청해주셔서", "start": 0.3, "end": 0.8, "probability": 0.9},
            {"text": "감사합니다.", "start": 0.8, "end": 1.2, "probability": 0.9},
        ],
    )
    svc = make_service()
    utts = feed(svc, chunks(pcm))
    assert len(utts) == 3 and all(u.text == "" and u.words == [] for u in utts)
    assert svc.ctx.metrics.utterances.labels("asr_alignment", "agent", "hallucination")._value.get() == 2


def test_words_off_the_voice_or_improbable_are_dropped(make_service, stereo_call, fake_asr):
    pcm, _ = stereo_call
    fake_asr.script = lambda seconds, lang: (
        "hello there maybe",
        [
            {"text": "hello", "start": 0.3, "end": 0.6, "probability": 0.9},
            {"text": "there", "start": 0.7, "end": 0.9, "probability": 0.001},
            {"text": "maybe", "start": seconds + 3, "end": seconds + 3.5, "probability": 0.9},
        ],
    )
    utts = feed(make_service(), chunks(pcm))
    assert [(u.text, [w.text for w in u.words]) for u in utts] == [("hello", ["hello"])] * 3


def test_audio_travels_inline_when_the_cache_is_down(make_service, stereo_call, settings):
    pcm, _ = stereo_call
    down = load_settings(home=settings.home)
    down.redis.port, down.redis.password = free_port(), PASSWORD
    utts = feed(make_service(cache=FeatureCache(down)), chunks(pcm))
    assert len(utts) == 3
    for u in utts:
        assert u.audio_key is None and u.audio.dtype == "int16"
        assert u.audio.shape == [round((u.end - u.start) * 16000)]


def test_triton_unavailable_retries_the_batch_without_moving_the_state(make_service, stereo_call, fake_asr):
    pcm, _ = stereo_call
    all_chunks = chunks(pcm)
    svc = make_service()
    fake_asr.fail = TritonError("asr: unavailable", retryable=True)
    with pytest.raises(TritonError) as failure:
        resolve(svc.process(all_chunks))
    assert is_dependency_failure(failure.value)  # the runtime drops the batch and replays it
    svc.abandon()
    fake_asr.fail = None
    assert len(feed(svc, all_chunks)) == 3


def test_hallucination_rules():
    assert hallucination("Thank you for watching!", 4)
    assert hallucination("Subtitles by the Amara.org community", 4)
    assert hallucination("구독", 4) and hallucination("시청해 주셔서 감사합니다!", 4)
    assert hallucination("구독 서비스를 해지하고 싶어요", 4) is None  # "subscription" in a real request
    assert hallucination("I'd like to cancel my subscription, thank you.", 4) is None
    assert hallucination("no no no", 4) is None
    assert is_ngram_loop("i am i am i am i am i am i".split(), 4)
    assert not is_ngram_loop("i am i am i am i am".split(), 4)
    assert not is_ngram_loop("please check my bill".split(), 4)
    words = [
        {"text": "a", "start": 0.0, "end": 0.2, "probability": 0.9},
        {"text": "b", "start": 2.0, "end": 2.2, "probability": 0.9},
    ]
    assert [w["text"] for w in guard_words(words, [(0.1, 1.0)], SegmentationSettings())] == ["a"]
