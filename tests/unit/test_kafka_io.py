"""Every blocking call of the project's Kafka clients ends within its bound
(:class:`shared.kafka_io.CallBound`): kafka-python 3.0 waits for its I/O thread with no timeout,
and these tests make that wait never end, on real kafka-python clients (their I/O thread and event
loop run; no broker is needed to block on them)."""

from __future__ import annotations

import threading
import time

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from kafka.net.selector import NetworkSelector
from kafka.structs import OffsetAndMetadata

from shared.kafka_io import CallBound, make_consumer, make_producer
from shared.settings import Settings

GRACE_S = 1.0
SLACK_S = 3.0
"""Scheduling slack for a loaded 2-core machine: a bounded call returns within its bound plus this,
an unbounded one never does (and the lost wake-up's default bound, 10 s, is well past it)."""


def _settings(tmp_path) -> Settings:
    s = Settings(home=tmp_path)
    s.kafka.port = 1  # nothing listens: the client never connects, its event loop still runs
    s.kafka.security_protocol = "PLAINTEXT"
    s.kafka.call_grace_s = GRACE_S
    s.kafka.request_timeout_ms = 1000
    return s


def _consumer(tmp_path, bounded: list[str], group_id: str | None = None):
    return make_consumer(
        _settings(tmp_path), group_id, None, on_bound=bounded.append, api_version=(3, 0), fetch_max_wait_ms=500
    )


async def _never(*_args):
    """A coroutine that waits on a future nobody completes: what ``poll`` met in CI."""
    return await Future()


def test_a_poll_whose_fetch_wait_never_completes_is_failed_within_its_bound(tmp_path):
    bounded: list[str] = []
    consumer = _consumer(tmp_path, bounded)
    try:
        real_fetch = consumer._fetcher.fetch_records
        consumer._fetcher.fetch_records = lambda *a, **k: consumer._net.run(_never)
        t0 = time.monotonic()
        with pytest.raises(KafkaTimeoutError, match="within its bound"):
            consumer.poll(timeout_ms=300)
        waited = time.monotonic() - t0
        assert 0.3 + GRACE_S - 0.05 < waited < 0.3 + GRACE_S + SLACK_S, waited  # its own 300 ms plus the grace
        assert bounded == ["consumer"] and consumer._call_bound.bounded == 1
        # the loop is intact: the next poll is answered normally and nothing more is counted
        consumer._fetcher.fetch_records = real_fetch
        assert consumer.poll(timeout_ms=200) == {}
        assert bounded == ["consumer"]
    finally:
        consumer.close()


def test_a_commit_whose_wait_never_completes_is_failed_within_its_bound(tmp_path):
    bounded: list[str] = []
    consumer = _consumer(tmp_path, bounded, group_id="bounded-commit")
    try:
        consumer._coordinator._commit_offsets_sync_async = _never
        offsets = {TopicPartition("t", 0): OffsetAndMetadata(5, "", -1)}
        t0 = time.monotonic()
        with pytest.raises(KafkaTimeoutError, match="within its bound"):
            consumer.commit(offsets, timeout_ms=500)
        assert 0.5 + GRACE_S - 0.05 < time.monotonic() - t0 < 0.5 + GRACE_S + SLACK_S
        t0 = time.monotonic()
        with pytest.raises(KafkaTimeoutError):  # no timeout of its own: the request timeout (1 s) plus the grace
            consumer.commit(offsets)
        assert 1.0 + GRACE_S - 0.05 < time.monotonic() - t0 < 1.0 + GRACE_S + SLACK_S
        assert bounded == ["consumer", "consumer"]
    finally:
        consumer.close()


def test_a_call_inside_a_public_call_keeps_the_outer_deadline(tmp_path):
    bound = CallBound(None, "consumer", default_s=30.0, grace_s=GRACE_S)
    with bound.call(200):
        outer = bound.deadline()
        with bound.call(60_000):  # a nested public call does not extend it
            assert bound.deadline() == outer
    assert outer - time.monotonic() < 0.2 + GRACE_S
    assert bound.deadline() - time.monotonic() > 29  # outside any call: the default bound


def test_a_lost_wake_up_costs_a_nudge_not_forever():
    """The I/O thread asleep in ``select`` with nothing scheduled, and the wake-up that should tell
    it about a posted call lost: the library's wait never returns, the bounded one is answered at
    the next nudge."""
    net = NetworkSelector()
    net.start()
    try:
        time.sleep(0.2)  # the loop is in select() with no timeout
        net.call_soon_threadsafe = net.call_soon  # post without waking the loop: the lost wake-up

        async def answer():
            return 42

        done = threading.Event()
        unbounded = threading.Thread(target=lambda: (net.run(answer), done.set()), daemon=True)
        unbounded.start()
        assert not done.wait(2.5), "the library's own wait returned: the simulation did not lose the wake-up"

        bound = CallBound(net, "consumer", default_s=10.0)
        t0 = time.monotonic()
        assert net.run(answer) == 42
        assert time.monotonic() - t0 < CallBound.NUDGE_S + SLACK_S
        assert done.wait(2), "the nudge ran the earlier call too"
        assert bound.bounded == 0
    finally:
        net.stop(timeout_ms=2000)


def test_a_producer_flush_without_a_timeout_is_bounded_and_counted(tmp_path):
    bounded: list[str] = []
    producer = make_producer(_settings(tmp_path), on_bound=bounded.append, api_version=(3, 0))
    seen: list[float | None] = []

    def never_flushed(timeout=None):
        seen.append(timeout)
        raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")

    try:
        producer._accumulator.await_flush_completion = never_flushed
        with pytest.raises(KafkaTimeoutError, match="within its bound"):
            producer.flush()
        with pytest.raises(KafkaTimeoutError):  # a caller's own timeout is the caller's to handle
            producer.flush(timeout=0.5)
        assert seen == [1.0 + GRACE_S, 0.5]
        assert bounded == ["producer"]
        assert producer.config["max_block_ms"] == 1000  # send() waits for metadata no longer than that
    finally:
        del producer._accumulator.await_flush_completion
        producer.close(timeout=1)


class FakeClient:
    """A consumer as TailReader uses it: two partitions at offset 10, then the answers given."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.wedged = False
        self.seeks: dict = {}
        self.closed = threading.Event()

    def partitions_for_topic(self, topic):
        return {0, 1}

    def assign(self, parts):
        self.assigned = list(parts)

    def seek_to_end(self, *parts):
        pass

    def position(self, tp):
        return 10

    def seek(self, tp, offset):
        self.seeks[tp] = offset

    def poll(self, timeout_ms):
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, Exception):
            if isinstance(answer, KafkaTimeoutError):
                self.wedged = True  # as CallBound says after its calls fail in a row
            raise answer
        return answer

    def close(self):
        self.closed.set()


class Rec:
    def __init__(self, offset):
        self.offset = offset


def test_a_reader_reads_a_failed_poll_as_no_records_and_pauses(tmp_path):
    from kafka.errors import KafkaConnectionError

    from shared.kafka_io import TailReader

    tp = TopicPartition("events", 0)
    client = FakeClient([KafkaConnectionError("socket disconnected"), {tp: [Rec(10), Rec(11)]}])
    reader = TailReader(_settings(tmp_path), ["events"], consumer=client)
    t0 = time.monotonic()
    assert reader.poll(200) == {}
    assert time.monotonic() - t0 >= 0.2  # no busy loop while the broker is away
    assert list(reader.poll(200)[tp]) and reader.consumer is client and reader.replaced == 0


def test_a_reader_replaces_a_wedged_client_at_the_positions_read_so_far(tmp_path, monkeypatch):
    from shared.kafka_io import TailReader

    tp0, tp1 = TopicPartition("events", 0), TopicPartition("events", 1)
    wedged = FakeClient([{tp0: [Rec(10), Rec(11)]}, KafkaTimeoutError("no answer within its bound")])
    fresh = FakeClient([{tp1: [Rec(10)]}])
    monkeypatch.setattr("shared.kafka_io.make_consumer", lambda *a, **k: fresh)
    reader = TailReader(_settings(tmp_path), ["events"], consumer=wedged)
    assert [r.offset for r in reader.poll(50)[tp0]] == [10, 11]
    assert reader.poll(50) == {}  # failed, and the client is wedged: let go, closed on the side
    assert wedged.closed.wait(2)
    assert [r.offset for r in reader.poll(50)[tp1]] == [10]  # the new client, where the old one stood
    assert fresh.seeks == {tp0: 12, tp1: 10} and reader.replaced == 1


def test_a_reader_lets_other_errors_through(tmp_path):
    from shared.kafka_io import TailReader

    reader = TailReader(_settings(tmp_path), ["events"], consumer=FakeClient([ValueError("a bug, not the broker")]))
    with pytest.raises(ValueError):
        reader.poll(10)
