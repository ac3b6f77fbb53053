"""``emotion publish`` and ``emotion consume`` as processes, on a real Kafka of their own.

Only Kafka runs (free ports, fresh home): three synthetic stereo calls are published concurrently
and read back from ``calls.audio`` (each call in order on one partition, byte-exact audio); a
manifest, a raw PCM file and raw PCM on stdin arrive byte-exact with their rates, channels, roles
and languages; a bad file fails the command without stopping the good one; a few emotion events
(one delivered twice, one of another call) come back from ``emotion consume --json --call``
exactly once each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from shared.contracts import AudioChunk, EmotionEvent, decode
from shared.settings import EMOTIONS, PROJECT_ROOT, Settings, settings_env
from tests.integration.conftest import isolated_settings

pytestmark = pytest.mark.integration

N_CALLS = 3


@pytest.fixture(scope="module")
def kafka_settings(tmp_path_factory):
    from deploy.local import stack

    s = isolated_settings(tmp_path_factory, "pubsub")
    s.kafka.num_partitions = 2
    try:
        stack.up(s, components=["kafka"], timeout_s=300)
        yield s
    finally:
        stack.down(s, components=["kafka"])


def emotion(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "emotion.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_topic(settings: Settings, topic: str, done, timeout_s: float = 60) -> list:
    """Every record of ``topic`` from the beginning, until ``done(records)`` or the timeout."""
    from kafka import TopicPartition

    from shared.kafka_io import make_consumer

    consumer = make_consumer(settings, None, None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_publish_synthetic_calls_in_order_and_byte_exact(kafka_settings, tmp_path):
    out_dir = tmp_path / "calls"
    t0 = time.monotonic()
    run = emotion(
        kafka_settings,
        "publish",
        "--synthetic",
        str(N_CALLS),
        "--seed",
        "3",
        "--synthetic-dir",
        str(out_dir),
        "--concurrency",
        str(N_CALLS),
        "--no-progress",
        "--id-prefix",
        "it-",
    )
    seconds = time.monotonic() - t0
    assert run.returncode == 0, run.stderr
    assert f"published {N_CALLS} call(s)" in run.stdout
    truths = sorted(out_dir.glob("*.json"))
    assert len(truths) == N_CALLS
    expected = {f"it-{p.stem}": p.with_suffix(".wav") for p in truths}

    def all_ended(records) -> bool:
        ended = {decode(r.value, AudioChunk).call_id for r in records if b'"end_of_call":true' in r.value}
        return ended >= set(expected)

    records = read_topic(kafka_settings, kafka_settings.topics.audio, all_ended)
    chunks: dict[str, list[AudioChunk]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        chunk = decode(r.value, AudioChunk)
        assert r.key == chunk.call_id.encode()
        chunks[chunk.call_id].append(chunk)
        partitions[chunk.call_id].add(r.partition)
    assert set(chunks) == set(expected)
    audio_s = 0.0
    for call_id, path in expected.items():
        got = chunks[call_id]
        assert len(partitions[call_id]) == 1, "a call must stay on one partition"
        assert [c.seq for c in got] == list(range(len(got)))
        assert [c.end_of_call for c in got] == [False] * (len(got) - 1) + [True]
        pcm, sr = sf.read(str(path), dtype="int16", always_2d=True)
        assert {(c.sample_rate, c.channels, tuple(c.channel_roles)) for c in got} == {(8000, 2, ("agent", "customer"))}
        assert np.concatenate([c.pcm.to_array() for c in got]).tobytes() == pcm.reshape(-1).tobytes()
        language = json.loads(path.with_suffix(".json").read_text())["language"]
        assert {c.language for c in got} == {language}
        audio_s += pcm.shape[0] / sr
    print(
        f"\n[publish] {N_CALLS} synthetic calls ({audio_s:.1f} s of audio) generated and published in {seconds:.1f} s"
    )


def test_publish_reports_a_bad_file_and_publishes_the_rest(kafka_settings, tmp_path):
    good = tmp_path / "good-call.wav"
    sf.write(str(good), (np.arange(4000) % 300).astype(np.int16), 8000, subtype="PCM_16")
    run = emotion(kafka_settings, "publish", str(good), str(tmp_path / "missing.wav"), "--no-progress")
    assert run.returncode == 1
    assert "missing.wav" in run.stderr and "not found" in run.stderr
    assert "published 1 call(s)" in run.stdout
    records = read_topic(
        kafka_settings,
        kafka_settings.topics.audio,
        lambda rs: any(r.key == b"good-call" and b'"end_of_call":true' in r.value for r in rs),
    )
    assert any(r.key == b"good-call" for r in records)


def _chunks_of(settings: Settings, call_ids: set[str]) -> dict[str, list[AudioChunk]]:
    """Every audio chunk of ``call_ids`` on the audio topic, in order, once each call has ended."""

    def ended(records) -> bool:
        return {r.key.decode() for r in records if b'"end_of_call":true' in r.value} >= call_ids

    out: dict[str, list[AudioChunk]] = defaultdict(list)
    for r in sorted(read_topic(settings, settings.topics.audio, ended), key=lambda r: (r.partition, r.offset)):
        if r.key.decode() in call_ids:
            out[r.key.decode()].append(decode(r.value, AudioChunk))
    return out


def test_publish_a_manifest_and_raw_pcm_from_a_file_and_stdin(kafka_settings, tmp_path):
    rng = np.random.default_rng(11)
    mono = np.round(rng.normal(0, 900, 12_000)).astype(np.int16)  # 1.5 s at 8 kHz
    stereo = np.round(rng.normal(0, 900, (16_000, 2))).astype(np.int16)  # 1 s at 16 kHz
    sf.write(str(tmp_path / "a.wav"), mono, 8000, subtype="PCM_16")
    sf.write(str(tmp_path / "b.flac"), stereo, 16000, subtype="PCM_16")
    manifest = tmp_path / "calls.jsonl"
    manifest.write_text(
        json.dumps({"audio": "a.wav", "call_id": "man-a", "language": "ko"})
        + "\n"
        + json.dumps({"audio": str(tmp_path / "b.flac"), "call_id": "man-b", "channels": ["customer", "agent"]})
        + "\n"
    )
    run = emotion(kafka_settings, "publish", "--manifest", str(manifest), "--language", "en", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "published 2 call(s)" in run.stdout
    got = _chunks_of(kafka_settings, {"man-a", "man-b"})
    a, b = got["man-a"], got["man-b"]
    assert np.concatenate([c.pcm.to_array() for c in a]).tobytes() == mono.tobytes()  # relative to the manifest
    assert {(c.sample_rate, c.channels, tuple(c.channel_roles), c.language) for c in a} == {(8000, 1, ("mono",), "ko")}
    assert np.concatenate([c.pcm.to_array() for c in b]).tobytes() == stereo.reshape(-1).tobytes()
    assert {(c.sample_rate, c.channels, tuple(c.channel_roles), c.language) for c in b} == {
        (16000, 2, ("customer", "agent"), "en")
    }  # the manifest's roles; --language for a call without one
    assert [c.seq for c in a] == list(range(len(a))) and a[-1].end_of_call and not any(c.end_of_call for c in a[:-1])

    # raw s16le: a file, then the same audio on stdin (sox ... - | emotion publish --raw 8000 -)
    raw = tmp_path / "raw-call.pcm"
    raw.write_bytes(mono.tobytes())
    run = emotion(kafka_settings, "publish", "--raw", "8000", str(raw), "--id-prefix", "raw-", "--no-progress")
    assert run.returncode == 0, run.stderr
    env = {**os.environ, **settings_env(kafka_settings)}
    piped = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion.cli",
            "publish",
            "--raw",
            "16000",
            "--raw-channels",
            "2",
            "--id-prefix",
            "pipe-",
            "--no-progress",
            "-",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        input=stereo.tobytes(),
        capture_output=True,
        timeout=300,
    )
    assert piped.returncode == 0, piped.stderr.decode()
    records = read_topic(
        kafka_settings,
        kafka_settings.topics.audio,
        lambda rs: (
            sum(
                b'"end_of_call":true' in r.value and (r.key.startswith(b"raw-") or r.key.startswith(b"pipe-"))
                for r in rs
            )
            >= 2
        ),
    )
    ids = {r.key.decode() for r in records if r.key.startswith((b"raw-", b"pipe-"))}
    assert len(ids) == 2, ids
    by_id = _chunks_of(kafka_settings, ids)
    file_call = next(v for k, v in by_id.items() if k.startswith("raw-"))
    pipe_call = next(v for k, v in by_id.items() if k.startswith("pipe-"))
    assert np.concatenate([c.pcm.to_array() for c in file_call]).tobytes() == mono.tobytes()
    assert {(c.sample_rate, c.channels) for c in file_call} == {(8000, 1)}
    assert np.concatenate([c.pcm.to_array() for c in pipe_call]).tobytes() == stereo.reshape(-1).tobytes()
    assert {(c.sample_rate, c.channels, tuple(c.channel_roles)) for c in pipe_call} == {
        (16000, 2, ("agent", "customer"))
    }


def test_consume_prints_each_event_of_the_call_once(kafka_settings):
    from shared.kafka_io import make_producer

    def event(call_id: str, n: int, label: str) -> EmotionEvent:
        probs = {e: (0.7 if e == label else 0.05) for e in EMOTIONS}
        return EmotionEvent(
            call_id=call_id,
            utterance_id=f"{call_id}/u{n}",
            speaker=("agent", "customer")[n % 2],
            start=3.0 * n,
            end=3.0 * n + 2.5,
            transcript=f"turn {n}",
            label=label,
            probabilities=probs,
            model_version="it-1",
        )

    mine = [event("consume-x", 0, "neutral"), event("consume-x", 1, "anger"), event("consume-x", 2, "neutral")]
    other = event("consume-y", 0, "sadness")
    replay = mine[1].model_copy(update={"message_id": "replayed"})
    producer = make_producer(kafka_settings)
    try:
        futures = [
            producer.send(kafka_settings.topics.emotions, key=e.key, value=e.encode())
            for e in (mine[0], other, mine[1], replay, mine[2])
        ]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close()
    t0 = time.monotonic()
    run = emotion(
        kafka_settings, "consume", "--from-beginning", "--timeout", "3", "--json", "--call", "consume-x", timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - t0 < 60
    got = [decode(line.encode(), EmotionEvent) for line in run.stdout.splitlines()]
    assert got == mine
    table = emotion(kafka_settings, "consume", "--from-beginning", "--timeout", "3", "--summary", timeout=120)
    assert table.returncode == 0, table.stderr
    assert "consume-y" in table.stdout and "sadness" in table.stdout
    assert "2 call(s), 0 escalated" in table.stdout
