"""The whole pipeline on the real stack: synthetic calls in, one emotion event per utterance out.

Kafka, Redis, Triton (all five models) and Prometheus run on free ports; the five services run as
``emotion serve NAME`` processes, graph_gat and moe_fusion as two instances each in one consumer
group.  Five stereo 8 kHz synthetic calls are published concurrently with ``emotion publish``'s
function; the test then reads ``utterances`` and ``emotions`` and checks:

* exactly one event per utterance, with its call id, in order within each call;
* as many utterances per call as the call has turns (voice-activity segmentation of real speech);
* each event's probabilities and label equal what the in-process model (the shipped default model,
  which ``emotion demo`` serves: same encoders, same speech encoder layer, same weights) gives for the same utterance audio (read back from Redis) and
  transcript, with each speaker's baseline accrued over the call's earlier utterances as training
  computes it (:func:`training.speakers.attach_baselines`; the served model normalises per speaker);
* the two instances of each joining service split the partitions and the count stays exact;
* the dashboard shows the live data (headless Chromium).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from shared.contracts import EmotionEvent, Utterance, decode
from shared.settings import Settings
from tests.integration.conftest import Drain, isolated_settings, running_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2700)]
"""Above the fixtures' own limits (stack and services start-up, 600 s each; the stream's 900 s
deadline), which then report first, with what they saw."""

N_CALLS = 5
SEED = 4321
DOUBLED = {"graph_gat": 2, "moe_fusion": 2}
"""Two instances in one consumer group each."""
PROBS_ATOL = 5e-3
"""In-process float32 features vs float16 on the wire and Triton's batching: probabilities agree
to a few 1e-3 (see test_triton_models for the 1e-4 check on identical features)."""


@dataclass
class Streamed:
    settings: Settings
    calls: list = field(default_factory=list)
    utterances: dict[str, Utterance] = field(default_factory=dict)
    events: list[EmotionEvent] = field(default_factory=list)
    seconds: float = 0.0
    drained: bool = False
    """Every service had committed all its input and the reader had read to the end when it stopped
    (:class:`~tests.integration.conftest.Drain`): no later duplicate can exist."""
    not_drained: str = ""
    """When it never drained: what was still in flight at the deadline (``Drain.why_not``)."""
    dashboard: dict | BaseException | None = None
    """What the live-dashboard check saw right after the stream (its figures, or what it raised)."""


def _read_all(settings: Settings, topic: str, contract, seen: dict[tuple[int, int], object], consumer) -> None:
    for records in consumer.poll(timeout_ms=500).values():
        for r in records:
            if r.topic == topic:
                seen[(r.partition, r.offset)] = decode(r.value, contract)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    s = isolated_settings(tmp_path_factory, "itest-stream")
    s.kafka.num_partitions = 4
    s.prometheus.scrape_interval_s = 1.0
    with running_pipeline(s, SEED, instances=DOUBLED, shipped=True) as services:
        yield s, services


@pytest.fixture(scope="module")
def streamed(pipeline, tmp_path_factory) -> Streamed:
    from emotion.publish import load_call, publish_calls
    from shared.kafka_io import TailReader
    from training.data.calls import generate_calls

    s, services = pipeline
    calls = generate_calls(tmp_path_factory.mktemp("calls"), N_CALLS, seed=SEED, progress=False)
    out = Streamed(s, calls)
    consumer = TailReader(s, [s.topics.utterances, s.topics.emotions], from_beginning=True)
    t0 = time.monotonic()
    report = publish_calls(s, [load_call(c.path, language=c.language) for c in calls], pace="fast", progress=False)
    assert report.calls == N_CALLS
    utterances: dict = {}
    events: dict = {}
    expected_turns = sum(len(c.turns) for c in calls)
    deadline = time.monotonic() + 900
    drain = Drain(s)
    while time.monotonic() < deadline:
        services.check()
        for records in consumer.poll(1000).values():
            for r in records:
                contract = Utterance if r.topic == s.topics.utterances else EmotionEvent
                (utterances if contract is Utterance else events)[(r.partition, r.offset)] = decode(r.value, contract)
        ids = {u.utterance_id for u in utterances.values()}
        done = len(ids) >= expected_turns and ids <= {e.utterance_id for e in events.values()}
        if done and not out.seconds:
            out.seconds = time.monotonic() - t0
        if done and drain.reached(consumer):
            out.drained = True
            break
    out.not_drained = "" if out.drained else drain.why_not()
    drain.close()
    consumer.close()
    out.utterances = {u.utterance_id: u for u in utterances.values()}
    out.events = [events[k] for k in sorted(events, key=lambda k: events[k].created_at)]
    # The dashboard draws rates over the last minutes: it is checked here, right after the calls,
    # whatever order the tests run in (test_dashboard_shows_the_live_pipeline reports it).
    from deploy.local.services import PIPELINE
    from tests.integration.dashboard_checks import check_live_dashboard

    try:
        out.dashboard = check_live_dashboard(s, out.events, PIPELINE, tmp_path_factory.mktemp("dashboard"))
    except Exception as exc:  # noqa: BLE001 - kept and raised by its own test, traceback and all
        out.dashboard = exc
    print(f"\n{N_CALLS} calls, {len(out.utterances)} utterances, {len(out.events)} events in {out.seconds:.1f} s")
    return out


def test_one_event_per_utterance_in_order(streamed):
    assert streamed.utterances, "no utterance came out of the ASR alignment service"
    assert streamed.drained, f"the pipeline never drained: {streamed.not_drained}"
    counts = collections.Counter(e.utterance_id for e in streamed.events)
    duplicated = {u: n for u, n in counts.items() if n > 1}
    assert not duplicated, f"utterances with several events: {duplicated}"
    assert set(counts) == set(streamed.utterances), (
        f"missing events: {sorted(set(streamed.utterances) - set(counts))}; "
        f"events without an utterance: {sorted(set(counts) - set(streamed.utterances))}"
    )
    by_call = collections.defaultdict(list)
    for e in streamed.events:
        u = streamed.utterances[e.utterance_id]
        assert e.call_id == u.call_id and e.speaker == u.speaker and (e.start, e.end) == (u.start, u.end)
        by_call[e.call_id].append(u.index)
    for call_id, indices in by_call.items():
        assert indices == sorted(indices), f"{call_id}: events out of order: {indices}"
    assert set(by_call) == {c.call_id for c in streamed.calls}


def test_dashboard_shows_the_live_pipeline(streamed):
    """The page in headless Chromium right after the calls (rates are drawn over minutes, so the
    ``streamed`` fixture runs the check then): every panel shows the live data."""
    if isinstance(streamed.dashboard, BaseException):
        raise streamed.dashboard
    figures = streamed.dashboard
    assert figures is not None, "the dashboard check did not run"
    print(
        f"dashboard: events after {figures['events_s']:.1f} s, page {figures['page_s']:.1f} s, "
        f"calls {figures['calls']}, event latency p95 {figures['event_latency_p95_s']}"
    )


def test_utterances_follow_the_turns_of_each_call(streamed):
    """Voice-activity segmentation finds every turn of the calls on its speaker's channel, and
    nothing between turns (a turn with a long pause may become two utterances)."""
    for call in streamed.calls:
        mine = [(u.speaker, u.start, u.end) for u in streamed.utterances.values() if u.call_id == call.call_id]
        for turn in call.turns:
            covered = [u for u in mine if u[0] == turn.speaker and u[1] < turn.end and u[2] > turn.start]
            assert covered, f"{call.call_id}: no utterance for {turn}; got {sorted(mine, key=lambda u: u[1])}"
            assert min(u[1] for u in covered) == pytest.approx(turn.start, abs=0.5)
            assert max(u[2] for u in covered) == pytest.approx(turn.end, abs=0.6)
        for speaker, start, end in mine:
            assert any(t.speaker == speaker and t.start - 0.5 <= start and end <= t.end + 0.6 for t in call.turns), (
                f"{call.call_id}: utterance {speaker} {start:.2f}-{end:.2f} outside every turn"
            )


def test_labels_equal_the_in_process_model(streamed):
    import torch
    from threadpoolctl import threadpool_limits

    from shared.cache import FeatureCache
    from shared.redaction import redact
    from training.checkpoint import load_model, model_version
    from training.encoders import SpeechEncoder, TextEncoder
    from training.encoders.speech import SpeechReading
    from training.features import FeatureRecord
    from training.models import collate
    from training.speakers import attach_baselines

    s = streamed.settings
    cache = FeatureCache(s)
    model, meta = load_model(s.default_model_dir)
    assert model.speaker_norm is not None
    reading = SpeechReading.of_version(meta.encoders["speech_encoder"])  # as it was trained, which export serves
    text_encoder = TextEncoder.from_bundle(s, threads=1)
    speech_encoder = SpeechEncoder.from_bundle(reading.applied(s), threads=1)
    checked, flagged = 0, collections.Counter()
    examples: dict[str, FeatureRecord] = {}
    for u in sorted((streamed.utterances[e.utterance_id] for e in streamed.events), key=lambda u: (u.call_id, u.index)):
        raw = cache.get(u.audio_key) if u.audio_key else None
        audio = np.frombuffer(raw, "<i2") if raw is not None else u.audio.to_array()
        with threadpool_limits(limits=1):
            text = text_encoder.encode([u.text])
            speech = speech_encoder.encode([audio.astype(np.float32) / 32768.0])
        examples[u.utterance_id] = FeatureRecord(
            text_hidden=text.hidden[0].astype(np.float16),
            text_mask=text.mask[0],
            token_offsets=text.offsets[0],
            speech_frames=speech.frames[0].astype(np.float16),
            speech_mask=speech.mask[0],
            frame_times=speech.frame_times[0],
            transcript=u.text,
            words=u.words,
            id=u.utterance_id,
            speaker=u.speaker,
            call_id=u.call_id,
        )
    attach_baselines(list(examples.values()), s.models.speaker_window)  # in call order, per speaker
    assert sum(e.speaker_count > 0 for e in examples.values()) >= len(examples) // 2
    for e in streamed.events:
        example = examples[e.utterance_id]
        with torch.inference_mode():
            probs = model(collate([example], edge_rule=model.config.edge_rule)).probs[0].numpy()
        names = list(model.config.class_names)
        served = np.array([e.probabilities[c] for c in names])
        np.testing.assert_allclose(served, probs, atol=PROBS_ATOL, err_msg=e.utterance_id)
        top2 = np.sort(probs)[-2:]
        if top2[1] - top2[0] > 2 * PROBS_ATOL:  # a clear winner: the labels must agree
            assert e.label == names[int(np.argmax(probs))], (e.utterance_id, e.probabilities, probs)
            checked += 1
        assert e.model_version == model_version(s.default_model_dir)
        # every other field: the utterance it answers, each branch's distribution, the stage latencies
        u = streamed.utterances[e.utterance_id]
        shown = redact(u.text, s.events.redact)
        assert (e.call_id, e.speaker, e.start, e.end, e.transcript) == (u.call_id, u.speaker, u.start, u.end, shown)
        assert set(e.branches) == {"ca_moe", "sp_moe"}
        for branch, dist in e.branches.items():
            assert list(dist) == names and sum(dist.values()) == pytest.approx(1.0, abs=1e-3), (branch, dist)
            assert all(0.0 <= p <= 1.0 for p in dist.values()), (branch, dist)
        assert set(e.latency_ms) == {"text", "speech", "graph", "fusion", "total"}
        assert all(v >= 0 for v in e.latency_ms.values())
        assert e.latency_ms["total"] >= max(e.latency_ms["text"], e.latency_ms["speech"], e.latency_ms["fusion"]) - 0.1
        expected_missing = {"text"} if not u.text.strip() else set()
        if not example.speech_mask.any():
            expected_missing.add("speech")
        if not u.words:
            expected_missing.add("graph")  # no word, no token-frame edge
        assert expected_missing <= set(e.missing_modalities) <= expected_missing | {"graph"}, (e.utterance_id, u.text)
        flagged.update(e.missing_modalities)
    assert checked >= len(streamed.events) // 2, f"only {checked} events had a clear label"
    assert flagged["speech"] == 0, "every streamed utterance carries speech"
    print(f"labels checked on {checked} of {len(streamed.events)} events; missing modalities: {dict(flagged)}")


def test_two_instances_split_the_partitions(streamed):
    """Each joining service ran as two instances in one group: each held its own partitions of
    every input topic, and the event count above stayed exact."""
    from shared.kafka_io import make_admin

    s = streamed.settings
    admin = make_admin(s)
    try:
        for name in DOUBLED:
            group = admin.describe_groups([f"emotion-{name}"])[f"emotion-{name}"]
            held = [
                {(a["topic"], p) for a in m["member_assignment"]["assigned_partitions"] for p in a["partitions"]}
                for m in group["members"]
            ]
            assert len(held) == 2 and all(held), (name, held)
            assert not held[0] & held[1], f"{name}: both instances hold {held[0] & held[1]}"
            topics = {t for t, _ in held[0] | held[1]}
            assert len(held[0] | held[1]) == len(topics) * s.kafka.num_partitions, (name, held)
    finally:
        admin.close()


def test_a_second_client_reads_every_event_and_each_fits_the_published_schema(streamed):
    """Interoperability: confluent-kafka (librdkafka, an independent Kafka client) reads the
    ``emotions`` topic with the documented SCRAM credentials, and every event validates against
    the JSON Schema published in docs/contracts, read as a consumer in another language would."""
    import json
    from pathlib import Path

    import confluent_kafka
    import jsonschema
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    s = streamed.settings
    published = Path(__file__).resolve().parents[2] / "docs" / "contracts" / "emotion_event.v1.schema.json"
    validator = jsonschema.Draft202012Validator(json.loads(published.read_text()))
    assert confluent_kafka.libversion()[0] >= "2", confluent_kafka.libversion()
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka.bootstrap,
            "security.protocol": s.kafka.security_protocol,
            "sasl.mechanism": s.kafka.sasl_mechanism,
            "sasl.username": s.kafka.username,
            "sasl.password": s.kafka_password,
            "group.id": "itest-second-client",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(s.topics.emotions, timeout=30).topics[s.topics.emotions].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(s.topics.emotions, p), timeout=30)[1] for p in partitions
        }
        consumer.assign([TopicPartition(s.topics.emotions, p, OFFSET_BEGINNING) for p in partitions])
        read: dict[tuple[int, int], dict] = {}
        deadline = time.monotonic() + 120
        while any(n and (p, n - 1) not in read for p, n in ends.items()) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            read[(message.partition(), message.offset())] = json.loads(message.value())
    finally:
        consumer.close()
    assert len(read) >= sum(ends.values()) >= len(streamed.events), f"read {len(read)} of {ends}"
    invalid = {k: [e.message for e in validator.iter_errors(v)] for k, v in read.items() if not validator.is_valid(v)}
    assert not invalid, f"events that break the published schema: {invalid}"
    assert {e.message_id for e in streamed.events} <= {v["message_id"] for v in read.values()}
