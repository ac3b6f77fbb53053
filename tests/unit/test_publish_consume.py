"""``emotion publish`` and ``emotion consume`` against fake Kafka clients: chunking, pacing,
interleaving, delivery failures, bad files; event rendering, de-duplication, filters, summaries."""

from __future__ import annotations

import io
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotion import cli
from services.event_reader import (
    EventTable,
    consume_events,
    format_event,
    render_summaries,
    summarize_calls,
    table_header,
)
from emotion.publish import (
    AudioSourceError,
    CallAudio,
    CallSource,
    calls_from_manifest,
    chunk_call,
    file_source,
    load_call,
    load_raw,
    manifest_sources,
    publish_calls,
)
from shared.contracts import AudioChunk, EmotionEvent, decode
from shared.settings import EMOTIONS, load_settings


@pytest.fixture()
def settings(tmp_path):
    return load_settings(home=tmp_path / "home", stack_name="unit-pubsub")


# ---- fakes --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeFuture:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout=None):
        if self.error is not None:
            raise self.error
        return "ok"


@dataclass
class Sent:
    topic: str
    key: bytes
    chunk: AudioChunk
    at: float


@dataclass
class FakeProducer:
    clock: FakeClock = field(default_factory=FakeClock)
    fail_future: set[tuple[str, int]] = field(default_factory=set)
    """(call_id, seq) whose future fails after the send."""
    refuse: set[tuple[str, int]] = field(default_factory=set)
    """(call_id, seq) whose send raises at once."""
    sent: list[Sent] = field(default_factory=list)
    flushed: bool = False
    closed: bool = False

    def send(self, topic, key=None, value=None):
        chunk = decode(value, AudioChunk)
        assert isinstance(chunk, AudioChunk)
        if (chunk.call_id, chunk.seq) in self.refuse:
            raise RuntimeError("message too large")
        self.sent.append(Sent(topic, key, chunk, self.clock.monotonic()))
        error = RuntimeError("not enough replicas") if (chunk.call_id, chunk.seq) in self.fail_future else None
        return FakeFuture(error)

    def partitions_for(self, topic):
        return {0, 1}

    def flush(self, timeout=None):
        self.flushed = True

    def close(self, timeout=None):
        self.closed = True

    def by_call(self) -> dict[str, list[AudioChunk]]:
        out: dict[str, list[AudioChunk]] = defaultdict(list)
        for s in self.sent:
            out[s.chunk.call_id].append(s.chunk)
        return out


def tone_call(call_id: str, seconds: float, sr: int = 8000, channels: int = 2) -> CallAudio:
    """Distinct, recognisable samples: channel 0 counts up, channel 1 counts down."""
    n = int(round(seconds * sr))
    ramp = (np.arange(n) % 20000).astype(np.int16)
    pcm = np.stack([ramp, -ramp - 1], axis=1)[:, :channels]
    roles = ["agent", "customer"] if channels == 2 else ["mono"]
    return CallAudio(call_id, np.ascontiguousarray(pcm), sr, roles, "en")


def write_wav(path: Path, pcm: np.ndarray, sr: int) -> Path:
    sf.write(str(path), pcm, sr, subtype="PCM_16")
    return path


# ---- chunking -----------------------------------------------------------------------------------


def test_chunks_sizes_seq_end_of_call_and_stereo_interleaving():
    call = tone_call("c1", 1.05)
    chunks = list(chunk_call(call, 200))
    assert [c.seq for c in chunks] == list(range(6))
    assert [c.end_of_call for c in chunks] == [False] * 5 + [True]
    arrays = [c.pcm.to_array() for c in chunks]
    assert [a.shape for a in arrays] == [(3200,)] * 5 + [(800,)]  # 1600 frames x 2 channels, then 400 x 2
    assert all(a.dtype == np.int16 for a in arrays)
    assert all(
        (c.sample_rate, c.channels, c.channel_roles, c.language) == (8000, 2, ["agent", "customer"], "en")
        for c in chunks
    )
    joined = np.concatenate(arrays)
    assert np.array_equal(joined[0::2], call.pcm[:, 0]) and np.array_equal(joined[1::2], call.pcm[:, 1])
    assert chunks[0].key == b"c1"


def test_call_audio_is_validated():
    pcm = np.zeros((10, 2), np.int16)
    with pytest.raises(AudioSourceError, match="channel roles"):
        CallAudio("c", pcm, 8000, ["mono"])
    with pytest.raises(AudioSourceError, match="int16"):
        CallAudio("c", pcm.astype(np.float32), 8000, ["agent", "customer"])
    with pytest.raises(AudioSourceError, match="sample rate"):
        CallAudio("c", pcm, 44100, ["agent", "customer"])


def test_load_call_keeps_8k_resamples_above_16k_and_names_roles(tmp_path):
    pcm8 = tone_call("x", 0.5).pcm
    call = load_call(write_wav(tmp_path / "a.wav", pcm8, 8000), language="ko")
    assert (call.call_id, call.sample_rate, call.language) == ("a", 8000, "ko")
    assert call.channel_roles == ["agent", "customer"]
    assert np.array_equal(call.pcm, pcm8)  # byte-exact
    swapped = load_call(tmp_path / "a.wav", "c9", ["customer", "agent"])
    assert (swapped.call_id, swapped.channel_roles) == ("c9", ["customer", "agent"])
    t = np.arange(44100) / 44100
    tone = np.round(np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[:, None]
    hi = load_call(write_wav(tmp_path / "b.flac", tone, 44100))
    assert (hi.sample_rate, hi.pcm.shape, hi.channel_roles) == (16000, (16000, 1), ["mono"])
    assert abs(np.abs(hi.pcm.astype(float)).max() - 8000) < 200  # level kept
    mid = load_call(write_wav(tmp_path / "c.wav", tone[:12000], 12000))
    assert mid.sample_rate == 12000  # rates up to 16 kHz are kept


def test_load_raw(tmp_path):
    call = tone_call("r", 0.3)
    raw = load_raw(call.pcm.tobytes(), 8000, 2, "r1", None, "en")
    assert np.array_equal(raw.pcm, call.pcm) and raw.channel_roles == ["agent", "customer"]
    with pytest.raises(AudioSourceError, match="whole number"):
        load_raw(b"\x00\x01\x02", 8000, 2, "r2")


def test_bad_files_are_named(tmp_path):
    (tmp_path / "broken.wav").write_text("this is not audio")
    with pytest.raises(AudioSourceError, match="broken.wav"):
        load_call(tmp_path / "broken.wav")
    with pytest.raises(AudioSourceError, match="missing.wav.*not found"):
        load_call(tmp_path / "missing.wav")


# ---- publishing ---------------------------------------------------------------------------------


def test_fast_publish_interleaves_calls_in_time_order(settings):
    producer = FakeProducer()
    calls = [tone_call("long", 1.0), tone_call("short", 0.5, channels=1)]
    report = publish_calls(
        settings, calls, pace="fast", chunk_ms=200, progress=False, producer=producer, clock=producer.clock
    )
    assert producer.clock.sleeps == []
    assert [(s.chunk.call_id, s.chunk.seq) for s in producer.sent] == [
        ("long", 0),
        ("short", 0),
        ("long", 1),
        ("short", 1),
        ("short", 2),
        ("long", 2),
        ("long", 3),
        ("long", 4),
    ]  # short's last chunk (0.4-0.5 s) is due at 0.5 s, before long's third (0.6 s)
    assert all(s.topic == settings.topics.audio and s.key == s.chunk.call_id.encode() for s in producer.sent)
    assert producer.flushed and not producer.closed  # a producer passed in is the caller's to close
    assert report.ok and (report.calls, report.chunks) == (2, 8)
    assert report.audio_s == pytest.approx(1.5) and sorted(report.call_ids) == ["long", "short"]
    for call in calls:
        got = producer.by_call()[call.call_id]
        assert [c.seq for c in got] == list(range(len(got))) and got[-1].end_of_call
        assert np.array_equal(np.concatenate([c.pcm.to_array() for c in got]), call.pcm.reshape(-1))


def test_realtime_pacing_sends_each_chunk_when_spoken(settings):
    producer = FakeProducer()
    t0 = producer.clock.now
    calls = [tone_call("a", 1.0), tone_call("b", 0.5)]
    report = publish_calls(
        settings, calls, pace="realtime", chunk_ms=200, progress=False, producer=producer, clock=producer.clock
    )
    times = {(s.chunk.call_id, s.chunk.seq): round(s.at - t0, 6) for s in producer.sent}
    assert times == {
        ("a", 0): 0.2,
        ("a", 1): 0.4,
        ("a", 2): 0.6,
        ("a", 3): 0.8,
        ("a", 4): 1.0,
        ("b", 0): 0.2,
        ("b", 1): 0.4,
        ("b", 2): 0.5,
    }
    assert report.wall_s == pytest.approx(1.0) and report.realtime_factor == pytest.approx(1.5)


def test_concurrency_limit_starts_the_next_call_when_one_ends(settings):
    producer = FakeProducer()
    t0 = producer.clock.now
    calls = [tone_call("a", 0.4), tone_call("b", 0.4), tone_call("c", 0.2)]
    publish_calls(
        settings,
        calls,
        pace="realtime",
        chunk_ms=200,
        progress=False,
        concurrency=1,
        producer=producer,
        clock=producer.clock,
    )
    assert [(s.chunk.call_id, round(s.at - t0, 6)) for s in producer.sent] == [
        ("a", 0.2),
        ("a", 0.4),
        ("b", 0.6),
        ("b", 0.8),
        ("c", 1.0),
    ]


def test_no_call_starts_once_until_says_so_and_the_calls_under_way_finish(settings, caplog):
    producer = FakeProducer()
    t0 = producer.clock.now
    loaded: list[str] = []

    def source(call):
        return CallSource(call.call_id, call.duration, lambda: loaded.append(call.call_id) or call)

    calls = [tone_call("a", 0.4), tone_call("b", 0.6), tone_call("c", 0.2), tone_call("d", 0.2)]
    report = publish_calls(
        settings,
        [source(c) for c in calls],
        pace="realtime",
        chunk_ms=200,
        progress=False,
        concurrency=2,
        producer=producer,
        clock=producer.clock,
        until=lambda: producer.clock.now - t0 >= 0.4,
    )
    # a and b start at once; a ends at 0.4 s, when the publishing is over: b finishes, c and d never load
    assert loaded == ["a", "b"] and report.ok and report.call_ids == ["a", "b"] and report.failures == []
    assert [(s.chunk.call_id, round(s.at - t0, 6)) for s in producer.sent][-1] == ("b", 0.6)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_bad_file_is_reported_and_the_other_calls_go_on(settings, tmp_path, capsys):
    good = write_wav(tmp_path / "good.wav", tone_call("g", 0.3).pcm, 8000)
    (tmp_path / "bad.wav").write_text("garbage")
    producer = FakeProducer()
    sources = [file_source(p, None, None, None) for p in (tmp_path / "bad.wav", good, tmp_path / "nope.wav")]
    report = publish_calls(settings, sources, progress=False, producer=producer, clock=producer.clock)
    assert not report.ok and report.call_ids == ["good"]
    assert [f.name for f in report.failures] == [str(tmp_path / "bad.wav"), str(tmp_path / "nope.wav")]
    assert "cannot decode" in report.failures[0].reason and "not found" in report.failures[1].reason
    assert "FAILED" in report.summary() and "bad.wav" in report.summary()


def test_unacknowledged_or_refused_sends_fail_their_call(settings):
    producer = FakeProducer(fail_future={("a", 1)}, refuse={("b", 0)})
    report = publish_calls(
        settings,
        [tone_call("a", 0.6), tone_call("b", 0.6), tone_call("c", 0.6)],
        progress=False,
        producer=producer,
        clock=producer.clock,
    )
    assert report.call_ids == ["c"]
    reasons = {f.name: f.reason for f in report.failures}
    assert "chunk 1 not acknowledged" in reasons["a"] and "not enough replicas" in reasons["a"]
    assert "chunk 0 not sent" in reasons["b"]
    assert [s.chunk.seq for s in producer.sent if s.chunk.call_id == "b"] == []  # a broken call stops


def test_manifest_sources(tmp_path):
    write_wav(tmp_path / "x.wav", tone_call("x", 0.2).pcm, 8000)
    lines = [
        {"audio": "x.wav", "call_id": "m1", "language": "ko", "channels": "customer,agent"},
        {"audio": str(tmp_path / "x.wav")},
    ]
    manifest = tmp_path / "calls.jsonl"
    manifest.write_text("\n".join(json.dumps(o) for o in lines) + "\n{not json\n")
    sources = manifest_sources(manifest, None, "en")
    first, second = (s.load() for s in sources[:2])
    assert (first.call_id, first.language, first.channel_roles) == ("m1", "ko", ["customer", "agent"])
    assert (second.call_id, second.language, second.channel_roles) == ("x", "en", ["agent", "customer"])
    with pytest.raises(AudioSourceError, match="calls.jsonl:3"):
        sources[2].load()
    with pytest.raises(AudioSourceError, match="calls.jsonl:3"):
        calls_from_manifest(manifest)
    manifest.write_text(json.dumps(lines[0]) + "\n")
    assert [c.call_id for c in calls_from_manifest(manifest)] == ["m1"]


def test_publish_command_exit_status_and_message(tmp_path, monkeypatch, capsys):
    producer = FakeProducer()
    monkeypatch.setattr("shared.kafka_io.make_producer", lambda settings: producer)
    folder = tmp_path / "calls"
    folder.mkdir()
    write_wav(folder / "one.wav", tone_call("1", 0.4).pcm, 8000)
    write_wav(folder / "two.flac", tone_call("2", 0.4, channels=1).pcm, 8000)
    (folder / "notes.txt").write_text("not a call")
    rc = cli.main(["--home", str(tmp_path / "home"), "publish", str(folder), "--no-progress", "--id-prefix", "t-"])
    assert rc == 0
    assert set(producer.by_call()) == {"t-one", "t-two"} and producer.closed
    assert "published 2 call(s)" in capsys.readouterr().out
    (folder / "three.wav").write_text("corrupt")
    rc = cli.main(["--home", str(tmp_path / "home"), "publish", str(folder), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 1 and "three.wav" in out.out and "three.wav" in out.err


# ---- consuming ----------------------------------------------------------------------------------


def event(
    call_id: str, n: int, speaker: str = "customer", label: str = "neutral", p: float = 0.8, **kw
) -> EmotionEvent:
    rest = (1 - p) / (len(EMOTIONS) - 1)
    probs = {e: (p if e == label else rest) for e in EMOTIONS}
    fields = dict(
        call_id=call_id,
        utterance_id=f"{call_id}/{n}",
        speaker=speaker,
        start=2.0 * n,
        end=2.0 * n + 1.5,
        transcript=f"utterance {n} of {call_id}",
        label=label,
        probabilities=probs,
        model_version="test-1",
    )
    fields.update(kw)
    return EmotionEvent(**fields)


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    value: bytes
    offset: int


class FakeConsumer:
    """Hands out ``batches`` (lists of raw values) one poll at a time, then nothing."""

    def __init__(self, batches: list[list[bytes]]) -> None:
        self.batches = list(batches)
        self.offset = 0
        self.closed = False

    def poll(self, timeout_ms=0):
        if not self.batches:
            time.sleep(min(timeout_ms, 20) / 1000)
            return {}
        records = []
        for value in self.batches.pop(0):
            records.append(Record(value, self.offset))
            self.offset += 1
        return {TP("emotions", 0): records}

    def close(self):
        self.closed = True


def test_consume_dedups_filters_skips_bad_and_times_out(settings, caplog):
    a0, a1, b0 = event("A", 0), event("A", 1), event("B", 0)
    replay = a0.model_copy(update={"message_id": "other"})  # at-least-once: the same utterance again
    consumer = FakeConsumer([[a0.encode(), b"{broken", b0.encode()], [replay.encode(), a1.encode()]])
    seen = []
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="emotion.consume"):
        events = consume_events(settings, timeout_s=0.3, consumer=consumer, on_event=seen.append)
    assert 0.3 <= time.monotonic() - t0 < 2
    assert [e.utterance_id for e in events] == ["A/0", "B/0", "A/1"] and seen == events
    assert "malformed JSON" in caplog.text and "offset 1" in caplog.text
    only_a = consume_events(
        settings,
        calls=["A"],
        timeout_s=0.1,
        consumer=FakeConsumer([[a0.encode(), b0.encode(), a1.encode(), a0.encode()]]),
    )
    assert [e.utterance_id for e in only_a] == ["A/0", "A/1"]
    first_two = consume_events(settings, max_events=2, consumer=FakeConsumer([[a0.encode(), b0.encode(), a1.encode()]]))
    assert len(first_two) == 2


def test_table_row():
    e = event(
        "call-7",
        3,
        label="anger",
        p=0.87,
        transcript="I have been waiting for forty minutes and " * 3,
        missing_modalities=["speech"],
    )
    row = format_event(e)
    assert "call-7" in row and "customer" in row and "6.0-7.5" in row and "anger" in row and "87%" in row
    assert "missing speech" in row and "…" in row and len(row) < 160
    header = table_header()
    assert header.index("label") == row.index("anger") and header.startswith("time")


def test_event_table_writes_rows_or_json_lines():
    a, b = event("A", 0), event("A", 1, label="fear")
    table, lines = io.StringIO(), io.StringIO()
    for writer in (EventTable(table), EventTable(lines, as_json=True)):
        writer.add(a)
        writer.add(b)
    assert table.getvalue().splitlines() == [table_header(), format_event(a), format_event(b)]
    assert lines.getvalue().splitlines() == [a.encode().decode(), b.encode().decode()]


def test_consume_command_json_and_summary(settings, tmp_path, monkeypatch, capsys):
    events = [
        event("A", 0, "agent"),
        event("A", 1, label="anger"),
        event("A", 2, label="disgust"),
        event("A", 3, label="anger"),
        event("B", 0),
    ]
    monkeypatch.setattr(
        "services.event_reader.open_reader", lambda *a, **k: FakeConsumer([[e.encode() for e in events]])
    )
    home = ["--home", str(tmp_path / "home")]
    rc = cli.main([*home, "consume", "--json", "--from-beginning", "--timeout", "0.2", "--call", "A", "--summary"])
    out = capsys.readouterr()
    assert rc == 0
    lines = out.out.splitlines()
    assert [decode(line.encode(), EmotionEvent) for line in lines] == events[:4]
    assert lines[1].encode() == events[1].encode()  # as it travelled
    assert "ESCALATION: 3 consecutive negative customer utterances (anger, disgust, anger)" in out.err
    assert "1 call(s), 1 escalated" in out.err
    rc = cli.main([*home, "consume", "--timeout", "0.2"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("time") and len(table) == 1 + len(events)
    # the negative labels come from the settings: anger and disgust no longer count
    monkeypatch.setenv("EMOTION_EVENTS__NEGATIVE_LABELS", '["fear"]')
    rc = cli.main([*home, "consume", "--from-beginning", "--timeout", "0.2", "--call", "A", "--summary"])
    assert rc == 0 and "A  4 utterance(s)  no escalation" in capsys.readouterr().out


# ---- summaries ----------------------------------------------------------------------------------


def test_escalation_when_negative_persists():
    calls = [
        event("E", 0, "agent"),
        event("E", 1, label="neutral"),
        event("E", 2, label="anger"),
        event("E", 4, label="disgust"),
        event("E", 5, "agent", label="anger"),
        event("E", 6, label="anger"),
    ]
    [summary] = summarize_calls(calls)
    assert summary.escalated and summary.escalation.kind == "negative_run" and summary.escalation.ongoing
    assert summary.escalation.reason == "3 consecutive negative customer utterances (anger, disgust, anger) from 4.0 s"
    assert [e.label for e in summary.timelines["customer"]] == ["neutral", "anger", "disgust", "anger"]
    assert [e.label for e in summary.timelines["agent"]] == ["neutral", "anger"]
    # a past run counts too
    [calmed] = summarize_calls(calls + [event("E", 7)])
    assert calmed.escalated and not calmed.escalation.ongoing
    # a break in the run, or a longer required run, is no escalation
    broken = [event("F", 0, label="anger"), event("F", 1, label="anger"), event("F", 2), event("F", 3, label="anger")]
    assert not summarize_calls(broken)[0].escalated
    assert not summarize_calls(calls, escalation_turns=4)[0].escalated
    # the agent's emotions never escalate a call
    agent_only = [event("G", n, "agent", label="anger") for n in range(4)] + [event("G", 9)]
    assert not summarize_calls(agent_only)[0].escalated
    # other negative labels
    assert not summarize_calls(calls, negative=("fear",))[0].escalated


def test_escalation_when_negative_probability_grows():
    def mixed(call_id: str, n: int, negative: float, label: str = "neutral") -> EmotionEvent:
        probs = {e: 0.0 for e in EMOTIONS}
        probs["anger"], probs["neutral"] = negative, 1 - negative
        return event(call_id, n, label=label).model_copy(update={"probabilities": probs})

    [rising] = summarize_calls([mixed("R", 0, 0.1), mixed("R", 1, 0.3), mixed("R", 2, 0.55, "anger")])
    assert rising.escalation.kind == "rising"
    assert rising.escalation.reason == "negative probability rising 0.10 -> 0.55 over 3 customer utterances from 0.0 s"
    assert "R  3 utterance(s)  ESCALATION: negative probability rising 0.10 -> 0.55" in render_summaries([rising])
    low = [mixed("L", 0, 0.1), mixed("L", 1, 0.3), mixed("L", 2, 0.45)]  # ends too low
    flat = [mixed("N", 0, 0.3), mixed("N", 1, 0.2), mixed("N", 2, 0.6, "anger")]  # not rising
    assert [s.escalated for s in summarize_calls(low + flat)] == [False, False]


def test_mono_calls_are_judged_on_every_utterance_and_duplicates_count_once():
    mono = [event("M", n, "mono", label="sadness") for n in range(3)]
    assert summarize_calls(mono)[0].escalated
    twice = summarize_calls([event("D", 0, label="anger"), event("D", 0, label="anger"), event("D", 1, label="anger")])
    assert twice[0].utterances == 2 and not twice[0].escalated


def test_render_summaries():
    text = render_summaries(
        summarize_calls(
            [event("A", 0, "agent"), event("A", 1, label="anger", p=0.9), event("B", 0, "agent", label="happiness")]
        )
    )
    assert "A  2 utterance(s)  no escalation" in text
    assert "  customer  2.0s anger 90%" in text and "  agent     0.0s neutral 80%" in text
    assert text.endswith("2 call(s), 0 escalated")
