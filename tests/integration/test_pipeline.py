"""The foundation end to end, on the real stack: Kafka -> a service on the shared runtime ->
Triton -> Redis -> Kafka, with Prometheus scraping the service and bad input dead-lettered."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import redis
from kafka import TopicPartition

from services.text_encoder import TextEncoderService
from shared.contracts import DeadLetter, TextFeatures, Utterance, decode
from shared.kafka_io import make_consumer, make_producer
from shared.runtime import ServiceRuntime

pytestmark = pytest.mark.integration


def _read_new(settings, topic, n, timeout_s=120.0, start_offsets=None, until=None):
    """Read n messages from topic (all partitions), starting at start_offsets; with ``until``,
    read until ``until(records)`` holds instead."""
    consumer = make_consumer(settings, None, None)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, (start_offsets or {}).get(tp, 0))
    out, deadline = [], time.monotonic() + timeout_s
    while (until(out) if until else len(out) >= n) is False and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            out.extend(recs)
    consumer.close()
    return out


def _end_offsets(settings, topic):
    consumer = make_consumer(settings, None, None)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = consumer.end_offsets(parts)
    consumer.close()
    return ends


def _prometheus(settings, query):
    url = f"http://{settings.prometheus.host}:{settings.prometheus.port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": query}
    )
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


@pytest.fixture(scope="module")
def running_service(stack_settings):
    service = TextEncoderService(stack_settings)
    from shared.metrics import FileScrapeTargets

    runtime = ServiceRuntime(
        service, stack_settings, group_id="test-text-encoder", scrape_targets=FileScrapeTargets(stack_settings)
    )  # as `emotion serve` runs it
    thread = threading.Thread(target=runtime.run, name="text-encoder", daemon=True)
    thread.start()
    assert runtime.started.wait(timeout=180), "the service did not start"
    yield runtime
    runtime.stop()
    thread.join(timeout=30)
    assert not thread.is_alive(), "service did not stop on request"


def test_message_flows_through_triton_redis_and_kafka(stack_settings, running_service):
    s = stack_settings
    out_start = _end_offsets(s, s.topics.text_features)
    dl_start = _end_offsets(s, s.topics.deadletter)
    producer = make_producer(s)
    good1 = Utterance(
        call_id="call-a", utterance_id="call-a/0", index=0, start=0, end=2, text="I am really angry about this bill"
    )
    good2 = Utterance(call_id="call-a", utterance_id="call-a/1", index=1, start=2, end=4, text="정말 감사합니다")
    # a malformed message between the two good ones, on the same call's partition
    producer.send(s.topics.utterances, key=good1.key, value=good1.encode())
    producer.send(s.topics.utterances, key=good1.key, value=b'{"contract": "utterance", "v": 1, "call_id": ')
    producer.send(s.topics.utterances, key=good2.key, value=good2.encode())
    producer.flush()

    records = _read_new(s, s.topics.text_features, 2, start_offsets=out_start)
    features = {f.utterance_id: f for f in (decode(r.value, TextFeatures) for r in records)}
    assert set(features) == {"call-a/0", "call-a/1"}
    for utt, f in zip((good1, good2), (features["call-a/0"], features["call-a/1"])):
        hidden, mask, offsets = f.hidden.to_array(), f.mask.to_array(), f.offsets.to_array()
        assert hidden.shape[0] == s.models.max_tokens and hidden.shape[1] >= 8
        assert np.isfinite(hidden.astype(np.float32)).all() and np.abs(hidden.astype(np.float32)).sum() > 0
        assert 2 < mask.sum() < 40
        spans = [utt.text[a:b] for a, b in offsets[mask.astype(bool)] if b > a]
        assert "".join(spans).replace(" ", "") == utt.text.replace(" ", "")
        assert f.call_id == "call-a" and f.cached is False and f.model_version != "unknown"

    letters = [decode(r.value, DeadLetter) for r in _read_new(s, s.topics.deadletter, 1, start_offsets=dl_start)]
    assert len(letters) == 1
    assert letters[0].service == "text_encoder" and "malformed JSON" in letters[0].reason
    assert letters[0].source_topic == s.topics.utterances

    # the features are in Redis under a content-addressed key with a TTL
    r = redis.Redis(host=s.redis.host, port=s.redis.port, password=s.redis_password)
    keys = r.keys(f"emotion:text:{features['call-a/0'].model_version}:*")
    assert len(keys) >= 2 and 0 < r.ttl(keys[0]) <= s.redis.feature_ttl_s

    # the same transcript again is served from the cache
    again = Utterance(call_id="call-b", utterance_id="call-b/0", index=0, start=0, end=2, text=good1.text)
    out_start = _end_offsets(s, s.topics.text_features)
    producer.send(s.topics.utterances, key=again.key, value=again.encode())
    producer.flush()
    repeat = decode(_read_new(s, s.topics.text_features, 1, start_offsets=out_start)[0].value, TextFeatures)
    assert repeat.cached is True and repeat.utterance_id == "call-b/0"
    np.testing.assert_array_equal(repeat.hidden.to_array(), features["call-a/0"].hidden.to_array())


def test_prometheus_scraped_the_service(stack_settings, running_service):
    deadline = time.monotonic() + 60
    query = f'sum(emotion_messages_total{{instance_id="{running_service.instance_id}"}})'
    while time.monotonic() < deadline:
        result = _prometheus(stack_settings, query)
        if result and float(result[0]["value"][1]) >= 1:
            break
        time.sleep(1)
    else:
        pytest.fail(f"Prometheus never scraped text_encoder's metrics ({query} -> {result})")
    up = _prometheus(stack_settings, f'up{{instance_id="{running_service.instance_id}"}}')
    assert len(up) == 1 and up[0]["value"][1] == "1" and up[0]["metric"]["service"] == "text_encoder"
    dead = _prometheus(stack_settings, f'emotion_deadletters_total{{instance_id="{running_service.instance_id}"}}')
    assert dead and float(dead[0]["value"][1]) >= 1


def test_emotion_serve_processes_and_stops_gracefully_on_sigterm(stack_settings, running_service, tmp_path):
    """The service as its own process (`emotion serve`, what a container runs): it registers with
    Prometheus, processes a message, and on SIGTERM finishes, commits and deregisters."""
    import os
    import signal
    import subprocess
    import sys

    from shared.settings import settings_env

    s = stack_settings
    targets = s.run_dir / "prometheus" / "targets"
    before = set(targets.glob("*.json"))
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emotion.cli", "serve", "text_encoder", "--group", "test-serve-sigterm"],
            env={**os.environ, **settings_env(s)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and set(targets.glob("*.json")) == before:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.5)
        mine = set(targets.glob("*.json")) - before
        assert mine, "the service never registered its metrics endpoint with Prometheus"
        out_start = _end_offsets(s, s.topics.text_features)
        u = Utterance(
            call_id="call-sig", utterance_id="call-sig/0", index=0, start=0, end=1, text="please hold the line"
        )
        producer = make_producer(s)
        producer.send(s.topics.utterances, key=u.key, value=u.encode())
        producer.flush()

        # two consumer groups read `utterances`: the in-process service of this module and the
        # subprocess (whose new group also replays the older utterances); each must answer once
        def answers(records):
            return [f for f in (decode(r.value, TextFeatures) for r in records) if f.utterance_id == "call-sig/0"]

        got = answers(
            _read_new(
                s,
                s.topics.text_features,
                0,
                timeout_s=180,
                start_offsets=out_start,
                until=lambda recs: len(answers(recs)) >= 2,
            )
        )
        assert len(got) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not (mine & set(targets.glob("*.json"))), "the metrics target was not removed on shutdown"
        assert "stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
