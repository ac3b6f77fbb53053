"""The consumer's stall guard against kafka-python's unbounded internal waits, on a real
kafka-python consumer (its I/O thread and event loop; no broker is needed to block on it)."""

from __future__ import annotations

import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from shared.kafka_io import StallGuard, make_consumer
from shared.settings import Settings


def _consumer(tmp_path, stall_s: float):
    s = Settings(home=tmp_path)
    s.kafka.port = 1  # nothing listens: the consumer never connects, its event loop still runs
    s.kafka.security_protocol = "PLAINTEXT"
    s.kafka.stall_s = stall_s
    return make_consumer(s, None, None, api_version=(3, 0))


def _never():
    """A coroutine that waits on a future nobody completes: what ``poll`` met in CI."""

    async def wait():
        return await Future()

    return wait


def test_a_call_blocked_past_stall_s_is_failed_and_the_consumer_still_works(tmp_path):
    consumer = _consumer(tmp_path, stall_s=1.0)
    try:
        guard = consumer._stall_guard
        t0 = time.monotonic()
        with pytest.raises(KafkaTimeoutError, match="stall guard"):
            consumer._net.run(_never())
        waited = time.monotonic() - t0
        assert 1.0 < waited < 4.0, waited
        assert guard.stalls == 1
        # the loop is intact: the next call is answered normally and is not failed
        async def answer():
            return 42

        assert consumer._net.run(answer) == 42
        assert consumer.poll(timeout_ms=200) == {}
        assert guard.stalls == 1
    finally:
        consumer.close()


def test_poll_blocked_inside_the_library_returns_through_the_guard(tmp_path):
    """``poll`` itself, with the library's fetch wait replaced by one that never ends."""
    consumer = _consumer(tmp_path, stall_s=1.0)
    try:
        consumer._fetcher.fetch_records = lambda *a, **k: consumer._net.run(_never())
        t0 = time.monotonic()
        with pytest.raises(KafkaTimeoutError):
            consumer.poll(timeout_ms=100)
        assert time.monotonic() - t0 < 4.0
    finally:
        consumer.close()


def test_calls_shorter_than_stall_s_are_left_alone(tmp_path):
    consumer = _consumer(tmp_path, stall_s=1.5)
    try:
        async def slow():
            await consumer._net.sleep(1.0)
            return "done"

        results = []
        threads = [threading.Thread(target=lambda: results.append(consumer._net.run(slow))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert results == ["done"] * 3
        assert consumer._stall_guard.stalls == 0
    finally:
        consumer.close()


def test_the_guard_is_off_at_zero_and_stops_with_its_client(tmp_path):
    consumer = _consumer(tmp_path, stall_s=0)
    assert not hasattr(consumer, "_stall_guard")
    consumer.close()

    consumer = _consumer(tmp_path, stall_s=0.4)
    guard = consumer._stall_guard
    assert guard._thread.is_alive()
    consumer.close()
    guard._thread.join(3)
    assert not guard._thread.is_alive(), "a closed client's guard ends"


def test_check_fails_only_waits_older_than_stall_s():
    class Net:
        def __init__(self):
            self._pending_waiters_lock = threading.Lock()
            self._pending_waiters = {}

    class Client:
        _net = Net()

    client = Client()
    guard = StallGuard(client, stall_s=10)
    old, new = threading.Event(), threading.Event()
    client._net._pending_waiters[old] = {"value": None, "exception": None}
    assert guard.check(now=100.0) == 0
    client._net._pending_waiters[new] = {"value": None, "exception": None}
    assert guard.check(now=105.0) == 0
    assert guard.check(now=110.5) == 1  # old: seen at 100
    assert old.is_set() and not new.is_set()
    assert list(client._net._pending_waiters) == [new]
    assert guard.check(now=115.5) == 1 and new.is_set()


def test_poll_through_faults_reads_a_failed_poll_as_no_records_and_pauses():
    from kafka.errors import KafkaConnectionError

    from shared.kafka_io import poll_through_faults

    class Reader:
        def __init__(self):
            self.answers = [KafkaConnectionError("socket disconnected"), {"tp": ["record"]}]

        def poll(self, timeout_ms):
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    reader = Reader()
    t0 = time.monotonic()
    assert poll_through_faults(reader, 200) == {}
    assert time.monotonic() - t0 >= 0.2  # no busy loop while the broker is away
    assert poll_through_faults(reader, 200) == {"tp": ["record"]}


def test_poll_through_faults_lets_other_errors_through():
    from shared.kafka_io import poll_through_faults

    class Reader:
        def poll(self, timeout_ms):
            raise ValueError("a bug, not the broker")

    with pytest.raises(ValueError):
        poll_through_faults(Reader(), 10)
