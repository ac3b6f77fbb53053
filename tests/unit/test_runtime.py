"""The shared service loop against in-memory fakes of the Kafka clients."""

import dataclasses
import time
from collections import namedtuple

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from shared.contracts import DeadLetter, TextFeatures, Utterance, decode
from shared.contracts import ArrayPayload
from shared.runtime import Deferred, Reject, Retry, Service, ServiceRuntime
from shared.settings import load_settings

import numpy as np

Record = namedtuple("Record", "topic partition offset key value")


class FakeFuture:
    def __init__(self, fail=False):
        self.fail = fail

    def get(self, timeout=None):
        if self.fail:
            raise TimeoutError("broker did not acknowledge")
        return None


class FakeProducer:
    def __init__(self):
        self.sent, self.fail_next = [], False

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        fail, self.fail_next = self.fail_next, False
        return FakeFuture(fail)

    def flush(self, timeout=None):
        pass


class FakeConsumer:
    """Records of the partitions it is assigned (``utterances``/0 at least); its broker can be away."""

    wedged = False  # as shared.kafka_io.BoundedConsumer: its calls fail by their bound, none answered

    def __init__(self, records):
        self.records, self.pos, self.commits, self.seeks = records, 0, [], []
        self.closed = False
        self.broker_away = False
        """While set, the broker does not answer: polls get nothing, offset look-ups fail."""
        self.partitions = {TopicPartition("utterances", 0)} | {TopicPartition(r.topic, r.partition) for r in records}

    def poll(self, timeout_ms=0, max_records=None):
        if self.broker_away:  # as kafka-python: a consumer cut off from the broker polls nothing
            return {}
        batch = self.records[self.pos : self.pos + (max_records or 500)]
        self.pos += len(batch)
        return {"tp": batch} if batch else {}

    def commit(self, offsets):
        self.commits.append({(tp.topic, tp.partition): o.offset for tp, o in offsets.items()})

    def seek(self, tp, offset):
        self.seeks.append((tp.topic, tp.partition, offset))
        self.pos = min(self.pos, next(i for i, r in enumerate(self.records) if r.offset == offset))

    def assignment(self):
        return set(self.partitions)

    def end_offsets(self, partitions, timeout_ms=None):
        if self.broker_away:
            raise KafkaTimeoutError("Failed to get offsets by timestamps in 1000.0 ms")
        return {
            tp: 1 + max((r.offset for r in self.records if (r.topic, r.partition) == tp), default=-1)
            for tp in partitions
        }

    def position(self, tp, timeout_ms=None):
        unread = [r.offset for r in self.records[self.pos :] if (r.topic, r.partition) == tp]
        return min(unread) if unread else self.end_offsets([tp])[tp]

    def close(self, autocommit=True, timeout_ms=None):
        self.closed = True


class UpperService(Service):
    """Echoes each utterance as text features; rejects transcripts saying 'reject', fails on 'down'."""

    name = "upper"
    input_topic = "utterances"
    output_topic = "features.text"
    input_contract = Utterance
    failures = 0

    def process(self, batch):
        if any(u.text == "down" for u in batch) and self.failures == 0:
            self.failures += 1
            raise Retry("triton unavailable")
        out = []
        for u in batch:
            if u.text == "reject":
                out.append(Reject("transcript says reject"))
                continue
            z = ArrayPayload.from_array(np.zeros((1, 1), np.float16))
            out.append(
                [
                    TextFeatures(
                        call_id=u.call_id, utterance_id=u.utterance_id, model_version="v", hidden=z, mask=z, offsets=z
                    )
                ]
            )
        return out


def _utt(i, text="hi"):
    return Utterance(call_id="c", utterance_id=f"c/{i}", index=i, start=0, end=1, text=text).encode()


def _runtime(records, tmp_path, **rt):
    s = load_settings(home=tmp_path)
    s.runtime.max_wait_ms, s.runtime.retry_backoff_s = 1, 0.0
    for k, v in rt.items():
        setattr(s.runtime, k, v)
    r = ServiceRuntime(UpperService(), s)
    r._consumer, r._producer = FakeConsumer(records), FakeProducer()
    return r


def test_good_messages_flow_and_offsets_are_committed_after_acks(tmp_path):
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(3)]
    r = _runtime(recs, tmp_path)
    rep = r.run_once()
    assert rep.consumed == 3 and rep.produced == 3 and rep.deadlettered == 0
    assert [t for t, _, _ in r._producer.sent] == ["features.text"] * 3
    assert r._consumer.commits == [{("utterances", 0): 3}]
    assert r.run_once() is None  # nothing left


def test_bad_messages_go_to_deadletter_with_their_reason_and_the_rest_flows(tmp_path):
    recs = [
        Record("utterances", 0, 0, b"c", b"{oops"),
        Record("utterances", 0, 1, b"c", _utt(1)),
        Record("utterances", 1, 7, None, _utt(2, "reject")),
        Record("utterances", 1, 8, b"c", b"x" * 2048),
    ]
    r = _runtime(recs, tmp_path, max_message_bytes=1024)
    rep = r.run_once()
    assert rep.deadlettered == 3 and rep.produced == 1
    letters = [decode(v, DeadLetter) for t, _, v in r._producer.sent if t == "deadletter"]
    reasons = {d.offset: d.reason for d in letters}
    assert "malformed JSON" in reasons[0]
    assert reasons[7] == "transcript says reject"
    assert "exceeds the limit of 1024" in reasons[8]
    assert letters[0].source_topic == "utterances" and letters[0].payload_bytes == 5
    assert r._consumer.commits == [{("utterances", 0): 2, ("utterances", 1): 9}]


def test_dependency_failure_commits_nothing_and_replays_the_batch(tmp_path):
    recs = [Record("utterances", 0, i, b"c", _utt(i, "down" if i == 1 else "hi")) for i in range(3)]
    r = _runtime(recs, tmp_path)
    r.run_once()
    assert r._consumer.commits == [] and r._producer.sent == []
    assert r._consumer.seeks == [("utterances", 0, 0)]
    rep = r.run_once()  # the replay succeeds
    assert rep.produced == 3 and r._consumer.commits == [{("utterances", 0): 3}]


def test_unacknowledged_output_is_not_committed(tmp_path):
    recs = [Record("utterances", 0, 0, b"c", _utt(0))]
    r = _runtime(recs, tmp_path)
    r._producer.fail_next = True
    r.run_once()
    assert r._consumer.commits == []
    assert r._consumer.seeks == [("utterances", 0, 0)]


def test_process_must_answer_every_input(tmp_path):
    class Broken(UpperService):
        def process(self, batch):
            return []

    r = _runtime([Record("utterances", 0, 0, b"c", _utt(0))], tmp_path)
    r.service = Broken()
    with pytest.raises(AssertionError, match="returned 0 results for 1 inputs"):
        r.run_once()


class JoinLikeService(Service):
    """Two input topics; answers each speech message, reports deliveries, and a timer output."""

    name = "joinlike"
    output_topic = "features.graph"

    def __init__(self):
        self.delivered_ids, self.timer_outputs = [], []

    def inputs(self):
        return {"utterances": Utterance, "features.text": TextFeatures}

    def process(self, batch):
        return [[u] if isinstance(u, Utterance) else [] for u in batch]

    def delivered(self, outputs):
        self.delivered_ids += [o.utterance_id for o in outputs]

    def tick(self, now, caught_up_since):
        out, self.timer_outputs = self.timer_outputs, []
        return out


def test_several_input_topics_each_with_its_contract(tmp_path):
    z = ArrayPayload.from_array(np.zeros((1, 1), np.float16))
    feats = TextFeatures(call_id="c", utterance_id="c/9", model_version="v", hidden=z, mask=z, offsets=z).encode()
    recs = [
        Record("utterances", 0, 0, b"c", _utt(0)),
        Record("features.text", 0, 1, b"c", feats),
        Record("features.text", 0, 2, b"c", _utt(1)),
    ]  # an utterance on the text topic: wrong contract
    s = load_settings(home=tmp_path)
    s.runtime.max_wait_ms = 1
    svc = JoinLikeService()
    r = ServiceRuntime(svc, s)
    r._consumer, r._producer = FakeConsumer(recs), FakeProducer()
    rep = r.run_once()
    assert (rep.consumed, rep.produced, rep.deadlettered) == (3, 1, 1)
    dead = decode(r._producer.sent[-1][2])
    assert isinstance(dead, DeadLetter) and "expected a text_features message" in dead.reason
    assert svc.delivered_ids == ["c/0"]  # after the acks, before the commit
    assert r._consumer.commits == [{("utterances", 0): 1, ("features.text", 0): 3}]


def test_tick_outputs_are_produced_and_delivered_even_when_idle(tmp_path):
    s = load_settings(home=tmp_path)
    s.runtime.tick_interval_s = 0.0
    svc = JoinLikeService()
    r = ServiceRuntime(svc, s)
    r._consumer, r._producer = FakeConsumer([]), FakeProducer()
    svc.timer_outputs = [decode(_utt(5))]
    assert r.run_once() is None and r.run_tick() == 1
    assert [t for t, _k, _v in r._producer.sent] == ["features.graph"] and svc.delivered_ids == ["c/5"]
    r._producer.fail_next = True  # not acknowledged: nothing delivered, the tick reports no output
    svc.timer_outputs = [decode(_utt(6))]
    assert r.run_tick() == 0 and svc.delivered_ids == ["c/5"]


def test_a_message_that_breaks_the_service_is_dead_lettered_alone(tmp_path):
    class Fragile(UpperService):
        def process(self, batch):
            if any(u.text == "poison" for u in batch):
                raise ValueError("cannot tokenise")
            return super().process(batch)

    recs = [Record("utterances", 0, i, b"c", _utt(i, t)) for i, t in enumerate(["a", "poison", "b"])]
    r = _runtime(recs, tmp_path)
    r.service = Fragile()
    rep = r.run_once()
    assert (rep.produced, rep.deadlettered) == (2, 1)
    (dead,) = [decode(v) for t, _k, v in r._producer.sent if t == "deadletter"]
    assert dead.offset == 1 and "ValueError: cannot tokenise" in dead.reason
    assert r._consumer.commits[-1] == {("utterances", 0): 3}
    r.service.retry_alone = False  # a service whose state spans the batch crashes instead
    r._consumer = FakeConsumer([Record("utterances", 0, 3, b"c", _utt(3, "poison"))])
    with pytest.raises(ValueError):
        r.run_once()


class Later(Deferred):
    """Results the test releases by hand; fails at result() when told to."""

    def __init__(self, results, fail=None):
        self.results, self.fail, self.released = results, fail, False

    def wait(self, timeout_s):
        return self.released

    def result(self):
        if self.fail is not None:
            raise self.fail
        return self.results


class DeferringService(UpperService):
    """Returns its results later; records what the runtime tells it."""

    def __init__(self):
        self.submitted, self.delivered_ids, self.abandoned = [], [], 0

    def process(self, batch):
        later = Later(super().process(batch))
        self.submitted.append(later)
        return later

    def delivered(self, outputs):
        self.delivered_ids += [o.utterance_id for o in outputs]

    def abandon(self):
        self.abandoned += 1


def _deferring(records, tmp_path, **rt):
    r = _runtime(records, tmp_path, max_batch=1, **rt)
    r.service = DeferringService()
    return r


def test_deferred_batches_stay_in_flight_and_complete_in_poll_order(tmp_path):
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(4)]
    r = _deferring(recs, tmp_path, max_in_flight=3, poll_timeout_ms=1)
    svc = r.service
    assert [r.run_once() for _ in range(3)] == [None, None, None]  # three submitted, none ready
    assert len(svc.submitted) == 3 and r._consumer.commits == [] and r._producer.sent == []
    assert r.run_once() is None and len(svc.submitted) == 3  # full: nothing more is polled
    svc.submitted[1].released = True  # a later batch ready first still waits for the oldest
    assert r.run_once() is None and r._consumer.commits == []
    svc.submitted[0].released = True
    assert r.run_once().produced == 1 and r._consumer.commits == [{("utterances", 0): 1}]
    assert r.run_once().produced == 1 and r._consumer.commits[-1] == {("utterances", 0): 2}
    assert len(svc.submitted) == 4  # room again: the fourth was polled
    svc.submitted[2].released = svc.submitted[3].released = True
    while r._in_flight:
        r.run_once()
    assert svc.delivered_ids == ["c/0", "c/1", "c/2", "c/3"]
    assert [c[("utterances", 0)] for c in r._consumer.commits] == [1, 2, 3, 4]


def test_a_failed_deferred_batch_drops_every_batch_in_flight_and_replays_them(tmp_path):
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(3)]
    r = _deferring(recs, tmp_path, max_in_flight=3, poll_timeout_ms=1)
    svc = r.service
    for _ in range(3):
        r.run_once()
    head = svc.submitted[0]
    head.fail, head.released = Retry("triton went away"), True
    r.run_once()
    assert svc.abandoned == 1 and not r._in_flight and r._consumer.commits == []
    assert r._consumer.seeks == [("utterances", 0, 0)]  # back to the oldest batch dropped
    for _ in range(3):
        r.run_once()
    for later in svc.submitted[3:]:
        later.released = True
    while r._in_flight:
        r.run_once()
    assert svc.delivered_ids == ["c/0", "c/1", "c/2"] and r._consumer.commits[-1] == {("utterances", 0): 3}


def test_batches_in_flight_are_completed_when_the_service_stops(tmp_path):
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(2)]
    r = _deferring(recs, tmp_path, max_in_flight=4, poll_timeout_ms=1)
    r.run_once(), r.run_once()
    for later in r.service.submitted:
        later.released = True
    r._drain()
    assert r.service.delivered_ids == ["c/0", "c/1"] and r._consumer.commits[-1] == {("utterances", 0): 2}


class TimedDeferringService(DeferringService):
    """A deferring service with a timer that fires once."""

    def __init__(self):
        super().__init__()
        self.timer_outputs = []

    def tick(self, now, caught_up_since):
        out, self.timer_outputs = self.timer_outputs, []
        return out


def test_timers_run_once_caught_up_even_with_batches_in_flight_and_queue_behind_them(tmp_path):
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(2)]
    r = _runtime(recs, tmp_path, max_batch=1, max_in_flight=4, poll_timeout_ms=1, lag_interval_s=0.0)
    r.service = svc = TimedDeferringService()
    r.run_once(), r.run_once()
    assert not r._caught_up  # each poll filled a whole batch: maybe a backlog
    r.run_once()
    assert r._caught_up and len(r._in_flight) == 2  # the broker had nothing more
    svc.timer_outputs = [decode(_utt(9))]
    assert r.run_tick(force=True) == 1
    assert len(r._in_flight) == 3 and r._producer.sent == []  # queued behind the two batches
    for later in svc.submitted:
        later.released = True
    while r._in_flight:
        r.run_once()
    assert svc.delivered_ids == ["c/0", "c/1", "c/9"]
    assert [c[("utterances", 0)] for c in r._consumer.commits] == [1, 2]  # the tick commits nothing


def test_a_full_pipeline_is_not_caught_up(tmp_path):
    """Not polling, it cannot know whether input piles up at the broker: no timers then."""
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(2)]
    r = _runtime(recs, tmp_path, max_batch=4, max_in_flight=1, poll_timeout_ms=1)
    r.service = TimedDeferringService()
    r.run_once()
    assert r._caught_up  # two records, a batch of four: drained
    r.run_once()
    assert not r._caught_up and len(r._in_flight) == 1


class ListeningService(UpperService):
    """Remembers each tick's ``caught_up_since``."""

    def __init__(self):
        self.ticks = []

    def tick(self, now, caught_up_since):
        self.ticks.append(caught_up_since)
        return []


def test_timers_count_only_the_time_the_broker_confirms_the_instance_caught_up(tmp_path):
    """An empty poll proves nothing: cut off from the broker, a consumer polls nothing too (the
    Kafka-restart fault test once saw the ASR service flush calls as silent mid-utterance). The
    broker must answer the lag samples the loop takes after its polls."""
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(40)]
    r = _runtime(recs, tmp_path, max_batch=8, tick_interval_s=0.0, lag_interval_s=0.0)
    r.service = svc = ListeningService()
    r.run_once()
    assert r.run_tick() == 0 and svc.ticks == []  # a whole batch polled, 32 behind: a backlog
    r._consumer.pos = 36
    started = time.time()
    r.run_once()  # the last 4: fewer than a batch, and the broker says nothing is left
    r.run_tick(), r.run_tick()
    assert len(svc.ticks) == 2 and svc.ticks[0] == svc.ticks[1] >= started  # one unbroken stretch
    r._consumer.broker_away = True
    assert r.run_once() is None and not r._caught_up  # nothing polled, but no answer to the lag sample
    assert r.run_tick() == 0 and len(svc.ticks) == 2
    r._consumer.broker_away = False
    back = time.time()
    r.run_once()
    r.run_tick()
    assert len(svc.ticks) == 3 and svc.ticks[2] >= back  # a new stretch: the silence starts again
    r._consumer.partitions.add(TopicPartition("utterances", 1))  # a rebalance
    moved = time.time()
    r.run_once()
    r.run_tick()
    assert len(svc.ticks) == 4 and svc.ticks[3] >= moved
    r._lag_sample = dataclasses.replace(r._lag_sample, at=time.time() - 60)  # no answer for a minute
    assert r.run_tick() == 0 and len(svc.ticks) == 4


def test_a_failed_timer_drops_the_batches_in_flight_with_it(tmp_path):
    class FailingTimer(TimedDeferringService):
        def tick(self, now, caught_up_since):
            raise Retry("redis went away")

    recs = [Record("utterances", 0, 0, b"c", _utt(0))]
    r = _runtime(recs, tmp_path, max_batch=1, max_in_flight=4, poll_timeout_ms=1)
    r.service = svc = FailingTimer()
    r.run_once(), r.run_once()  # the batch in flight, then an empty poll: caught up
    assert r._caught_up and len(r._in_flight) == 1
    assert r.run_tick(force=True) == 0
    assert svc.abandoned == 1 and not r._in_flight and r._consumer.seeks == [("utterances", 0, 0)]


@pytest.mark.parametrize(
    "message, status, retry",
    [
        ("Request for unknown model: 'graph_gat' has no available versions", "StatusCode.UNAVAILABLE", True),
        ("Request for unknown model: 'graph_gat' has no available versions", "StatusCode.INVALID_ARGUMENT", True),
        ("Request for unknown model: 'moe_fusion' is not found", "StatusCode.NOT_FOUND", True),
        ("failed to connect to all addresses", None, True),
        ("in ensemble 'asr', model is not ready", "StatusCode.INTERNAL", True),
        ("unexpected shape for input 'AUDIO' for model 'asr'", "StatusCode.INVALID_ARGUMENT", False),
        ("Failed to process the request(s) for model 'asr': ValueError: bad audio", "StatusCode.INTERNAL", False),
    ],
)
def test_a_model_away_during_a_triton_restart_is_waited_out_and_a_bad_request_is_not(message, status, retry):
    """Triton unloads every model before it stops listening: "unknown model" mid-restart is a
    dependency failure (retried), never a reason to dead-letter the batch."""
    from tritonclient.utils import InferenceServerException

    from shared.triton_client import _retryable

    assert _retryable(InferenceServerException(message, status=status)) is retry


def test_a_wedged_consumer_is_replaced_and_the_batches_in_flight_are_replayed(tmp_path, monkeypatch):
    """A consumer whose calls fail by their bound with none answered (its I/O loop stuck) is let go:
    the batch in flight is dropped uncommitted, and a new member reads from the committed offsets."""
    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(4)]
    r = _runtime(recs, tmp_path, max_batch=2)
    old = r._consumer
    r._in_flight.append("a batch polled by the wedged consumer")

    def no_answer(timeout_ms=0, max_records=None):
        old.wedged = True
        raise KafkaTimeoutError("a Kafka consumer call got no answer within its bound of 15.5 s")

    old.poll = no_answer
    fresh = FakeConsumer(recs)
    monkeypatch.setattr(r, "_make_consumer", lambda: fresh)
    assert r.run_once() is None
    assert r._consumer is fresh and not r._in_flight and old.commits == []
    for _ in range(50):  # closed on a thread of its own
        if old.closed:
            break
        time.sleep(0.02)
    assert old.closed
    reports = [r.run_once(), r.run_once()]
    assert [rep.consumed for rep in reports] == [2, 2] and fresh.commits[-1] == {("utterances", 0): 4}


def test_a_poll_that_fails_while_the_broker_restarts_is_waited_out_not_fatal(tmp_path):
    """Seen in CI: a Kafka restart made consumer.poll raise KafkaConnectionError, which killed
    the service.  A failed poll took nothing: the loop backs off and polls again."""
    from kafka.errors import KafkaConnectionError

    recs = [Record("utterances", 0, i, b"c", _utt(i)) for i in range(2)]
    r = _runtime(recs, tmp_path)
    polls = {"n": 0}
    real_poll = r._consumer.poll

    def flaky_poll(timeout_ms=0, max_records=None):
        polls["n"] += 1
        if polls["n"] == 1:
            raise KafkaConnectionError("111 ECONNREFUSED")
        return real_poll(timeout_ms, max_records)

    r._consumer.poll = flaky_poll
    assert r.run_once() is None and r._consumer.commits == []
    rep = r.run_once()
    assert rep.consumed == 2 and r._consumer.commits == [{("utterances", 0): 2}]
