"""Kafka clients configured one way for the whole system.

* The producer is idempotent (kafka-python 3.0's default) with ``acks=all``, so a retried send
  never duplicates a record within a producer session.
* Every client authenticates with SASL/SCRAM (``settings.kafka.security_protocol``) as
  ``settings.kafka.username`` with :attr:`shared.settings.Settings.kafka_password`.
* Every blocking call of every client made here returns within a bound or raises
  :class:`KafkaTimeoutError` (:class:`CallBound`), counted per client role.
* Consumers never auto-commit: :class:`shared.runtime.ServiceRuntime` commits a batch's offsets
  only after every output of that batch has been acknowledged by the broker (at-least-once).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import __version__ as kafka_version
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from shared.settings import Settings

log = logging.getLogger(__name__)


def client_options(settings: Settings) -> dict:
    """Connection and security options shared by every kafka-python client."""
    k = settings.kafka
    options = {
        "bootstrap_servers": k.bootstrap,
        "client_id": k.client_id,
        "request_timeout_ms": k.request_timeout_ms,
        "bootstrap_timeout_ms": 30_000,
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.username, sasl_plain_password=settings.kafka_password
        )
    return options


def make_producer(settings: Settings, on_bound: OnBound | None = None, **overrides) -> BoundedProducer:
    """An idempotent producer (acks=all) sized for the contract's largest messages; its blocking
    calls are bounded (:class:`BoundedProducer`)."""
    config = {
        **client_options(settings),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": settings.kafka.max_message_bytes,
        "retries": 2_147_483_647,
        "max_block_ms": settings.kafka.request_timeout_ms,  # send() waiting for metadata or buffer space
    }
    config.update(overrides)
    producer = BoundedProducer(**config)
    producer._call_bound = CallBound(None, "producer", _default_bound_s(settings, config), on_bound)
    return producer


def make_consumer(
    settings: Settings, group_id: str | None, topics: list[str] | None, on_bound: OnBound | None = None, **overrides
) -> BoundedConsumer:
    """A consumer that never auto-commits; ``group_id=None`` gives a standalone reader. Its
    blocking calls are bounded (:class:`BoundedConsumer`)."""
    config = {
        **client_options(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.runtime.max_batch,
        "fetch_max_wait_ms": 2000,  # the broker answers as soon as there is data; this only spaces idle fetches
        "fetch_max_bytes": max(52_428_800, settings.kafka.max_message_bytes),
        "max_partition_fetch_bytes": settings.kafka.max_message_bytes,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "max_poll_interval_ms": 300_000,
    }
    config.update(overrides)
    consumer = BoundedConsumer(**config)
    consumer._call_bound = CallBound(
        consumer._net, "consumer", _default_bound_s(settings, config), on_bound, settings.kafka.call_grace_s
    )
    if topics:
        consumer.subscribe(topics)
    return consumer


def make_admin(settings: Settings, on_bound: OnBound | None = None, **overrides) -> KafkaAdminClient:
    """An admin client; each of its calls is bounded by its request timeout plus
    ``kafka.call_grace_s`` (:class:`CallBound`)."""
    config = {**client_options(settings), **overrides}
    admin = KafkaAdminClient(**config)
    admin._call_bound = CallBound(admin._net, "admin", _default_bound_s(settings, config), on_bound)
    return admin


OnBound = Callable[[str], None]
"""Told the client role (``consumer``, ``producer``, ``admin``) each time a call is failed by its
bound: the runtime counts it in ``emotion_kafka_calls_bounded_total``."""


def _default_bound_s(settings: Settings, config: dict) -> float:
    return config.get("request_timeout_ms", settings.kafka.request_timeout_ms) / 1000 + settings.kafka.call_grace_s


class CallBound:
    """Bounds every blocking call of one kafka-python client.

    kafka-python 3.0 runs a client's I/O on its own thread. A foreground call (``poll``,
    ``commit``, ``position``, ``end_offsets``, every admin call) posts a coroutine to that thread
    and then waits for it on a ``threading.Event`` **with no timeout** (``NetworkSelector.run``).
    The coroutines carry timeouts of their own, so the wait ends -- as long as the I/O thread
    runs the coroutine and its timers. Across a broker restart under load it once did not: CI,
    2026-12-05, a reader's ``poll(timeout_ms=500)`` blocked for 900 s in ``event.wait()``
    (``docs/reliability.md`` has the reproduction attempts and the suspected causes).

    This class replaces the client's ``_net.run`` with the same hand-off whose wait is bounded:

    * the bound of a call is the deadline of the public method it serves -- that method's own
      timeout plus ``kafka.call_grace_s`` (:meth:`call`, used by :class:`BoundedConsumer`) --
      or, for a call outside one (admin calls, metadata look-ups), the client's request timeout
      plus the grace;
    * while it waits it nudges the I/O thread's selector once a second (``net.wakeup()``): a
      lost wake-up, which leaves the loop asleep in ``select`` with the call posted but not run,
      costs a second instead of forever;
    * at the deadline the wait is withdrawn and :class:`KafkaTimeoutError` raised, which callers
      meet like any Kafka failure (the runtime waits it out and retries the batch; readers poll
      again from the same positions); ``on_bound(role)`` is told, and :attr:`bounded` counts it.
      The coroutine itself goes on, and its late result is dropped.

    The net's ``stop`` (client close) gets the same default bound instead of joining the I/O
    thread forever. It relies on ``NetworkSelector`` internals (``_io_thread``,
    ``_pending_waiters``, ``_invoke``), which is why kafka-python is pinned ``>=3.0.12,<3.1``; a
    client without them is left unbounded, with a warning.
    """

    NUDGE_S = 1.0
    """How often a waiting call wakes the I/O thread's selector."""
    WEDGED_AFTER = 3
    """Calls failed in a row (none answered between them) after which the client counts as
    :attr:`wedged`: its owner replaces it (:class:`TailReader`, the service runtime)."""

    def __init__(self, net, role: str, default_s: float, on_bound: OnBound | None = None, grace_s: float = 0.0):
        self.role = role
        self.default_s = default_s
        self.grace_s = grace_s
        self.on_bound = on_bound
        self.bounded = 0
        """Calls failed by the bound so far."""
        self.in_a_row = 0
        """Calls failed by the bound since the last answered one."""
        self._local = threading.local()
        self._net = net
        if net is None:
            return
        if not all(hasattr(net, a) for a in ("_io_thread", "_pending_waiters", "_pending_waiters_lock", "_invoke")):
            log.warning(
                "kafka-python %s lacks the NetworkSelector internals CallBound needs: %s calls are unbounded",
                kafka_version,
                role,
            )
            return
        self._run_unbounded, self._stop_unbounded = net.run, net.stop
        net.run, net.stop = self.run, self._stop  # instance attributes shadow the methods

    @contextmanager
    def call(self, timeout_ms: float | None) -> Iterator[None]:
        """The deadline of one public call: its own ``timeout_ms`` (``None``: the default bound)
        plus the grace. A call made inside another keeps the outer deadline."""
        if getattr(self._local, "deadline", None) is not None:
            yield
            return
        own_s = self.default_s if timeout_ms is None else timeout_ms / 1000 + self.grace_s
        self._local.deadline = time.monotonic() + own_s
        try:
            yield
        finally:
            self._local.deadline = None

    def deadline(self) -> float:
        return getattr(self._local, "deadline", None) or time.monotonic() + self.default_s

    @property
    def wedged(self) -> bool:
        """:attr:`WEDGED_AFTER` calls in a row got no answer: the client's I/O loop is not
        running its calls, and only a new client helps."""
        return self.in_a_row >= self.WEDGED_AFTER

    def exceeded(self, what: str, waited_s: float) -> KafkaTimeoutError:
        """Count a call failed by its bound; the error to raise. The log carries where the
        client's I/O thread is (the evidence for an upstream report)."""
        self.bounded += 1
        self.in_a_row += 1
        log.warning(
            "kafka %s: %s failed by its bound after %.1f s (%d so far, %d in a row); the caller retries; "
            "the I/O thread is at:\n%s",
            self.role,
            what,
            waited_s,
            self.bounded,
            self.in_a_row,
            self._io_thread_stack(),
        )
        if self.on_bound is not None:
            try:
                self.on_bound(self.role)
            except Exception:  # counting must never take the caller down
                log.exception("kafka %s: on_bound failed", self.role)
        return KafkaTimeoutError(f"a Kafka {self.role} call got no answer within its bound of {waited_s:.1f} s")

    def run(self, coro, *args):
        """``NetworkSelector.run`` with a bounded wait (the rest as kafka-python does it)."""
        net = self._net
        if net._io_thread is None or threading.current_thread() is net._io_thread or net._closed or net._exception:
            return self._run_unbounded(coro, *args)  # the caller drives the loop, or the library raises
        deadline = self.deadline()
        t0 = time.monotonic()
        event = threading.Event()
        state = {"value": None, "exception": None}

        async def waiter():
            try:
                state["value"] = await net._invoke(coro, *args)
            except BaseException as exc:
                if state["exception"] is None:
                    state["exception"] = exc
            finally:
                with net._pending_waiters_lock:
                    net._pending_waiters.pop(event, None)
                event.set()

        with net._pending_waiters_lock:
            net._pending_waiters[event] = state
        net.call_soon_threadsafe(waiter)
        while not event.wait(max(0.0, min(self.NUDGE_S, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                with net._pending_waiters_lock:
                    net._pending_waiters.pop(event, None)
                if event.is_set():  # answered at the last moment
                    break
                raise self.exceeded(getattr(coro, "__qualname__", type(coro).__name__), time.monotonic() - t0)
            net.wakeup()
        self.in_a_row = 0  # answered (a value or the library's own error): the loop runs
        if state["exception"] is not None:
            raise state["exception"]
        return state["value"]

    def _io_thread_stack(self) -> str:
        thread = getattr(self._net, "_io_thread", None)
        frame = sys._current_frames().get(thread.ident) if thread is not None else None
        if frame is None:
            return "  (no I/O thread running)"
        return "".join(traceback.format_stack(frame, limit=8)).rstrip()

    def _stop(self, timeout_ms=None):
        return self._stop_unbounded(self.default_s * 1000 if timeout_ms is None else timeout_ms)


class BoundedConsumer(KafkaConsumer):
    """A :class:`KafkaConsumer` whose blocking calls end by their own timeout plus
    ``kafka.call_grace_s`` (:class:`CallBound`), or raise :class:`KafkaTimeoutError`."""

    _call_bound: CallBound = CallBound(None, "consumer", 60.0)  # replaced by make_consumer

    def poll(self, timeout_ms=0, max_records=None, update_offsets=True):
        with self._call_bound.call(timeout_ms):
            return super().poll(timeout_ms=timeout_ms, max_records=max_records, update_offsets=update_offsets)

    def commit(self, offsets=None, timeout_ms=None):
        with self._call_bound.call(timeout_ms):
            return super().commit(offsets, timeout_ms=timeout_ms)

    def committed(self, partition, metadata=False, timeout_ms=None):
        with self._call_bound.call(timeout_ms):
            return super().committed(partition, metadata=metadata, timeout_ms=timeout_ms)

    def position(self, partition, timeout_ms=None):
        with self._call_bound.call(timeout_ms):
            return super().position(partition, timeout_ms=timeout_ms)

    def beginning_offsets(self, partitions, timeout_ms=None):
        with self._call_bound.call(timeout_ms):
            return super().beginning_offsets(partitions, timeout_ms=timeout_ms)

    def end_offsets(self, partitions, timeout_ms=None):
        with self._call_bound.call(timeout_ms):
            return super().end_offsets(partitions, timeout_ms=timeout_ms)

    def close(self, autocommit=True, timeout_ms=None):
        with self._call_bound.call(timeout_ms):
            return super().close(autocommit=autocommit, timeout_ms=timeout_ms)

    @property
    def wedged(self) -> bool:
        """Its calls fail by their bound, none answered (:attr:`CallBound.wedged`): replace it."""
        return self._call_bound.wedged


class BoundedProducer(KafkaProducer):
    """A :class:`KafkaProducer` whose ``flush`` and ``close`` default to the request timeout plus
    ``kafka.call_grace_s`` instead of waiting forever; ``send`` is bounded by ``max_block_ms``
    (:func:`make_producer` sets it to the request timeout) and ``future.get`` by its caller."""

    _call_bound: CallBound = CallBound(None, "producer", 60.0)  # replaced by make_producer

    def flush(self, timeout=None):
        try:
            flushed = super().flush(timeout=self._call_bound.default_s if timeout is None else timeout)
            self._call_bound.in_a_row = 0
            return flushed
        except KafkaTimeoutError:
            if timeout is None:
                raise self._call_bound.exceeded("flush", self._call_bound.default_s) from None
            raise

    def close(self, timeout=None, null_logger=False):
        return super().close(
            timeout=self._call_bound.default_s if timeout is None else timeout, null_logger=null_logger
        )


class TailReader:
    """A standalone reader (no group, nothing committed) of every partition of ``topics`` that
    outlives broker restarts. The demo, ``emotion consume``, the benchmarks and the tests read
    events with it.

    * It starts at the topics' current end (resolved now, so that whatever is produced next is
      read) or, with ``from_beginning``, at their beginning.
    * :meth:`poll` reads a failed poll (the broker away, or a call failed by its bound) as no
      records, after a pause of ``timeout_ms``; the positions are unchanged, so nothing is skipped.
    * When its client is :attr:`CallBound.wedged` (calls failing by their bound, none answered),
      the client is replaced by a new one at the positions read so far: a wedged I/O loop costs
      a few bounds, not the reader.

    ``consumer`` adopts a consumer made by :func:`make_consumer` (not yet assigned) as the first
    client; ``overrides`` go to :func:`make_consumer` for every client it makes.
    """

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        *,
        from_beginning: bool = False,
        consumer: BoundedConsumer | None = None,
        **overrides,
    ):
        self.settings, self.topics, self._overrides = settings, list(topics), overrides
        self.replaced = 0
        """How many times a wedged client was replaced."""
        self.consumer = consumer if consumer is not None else make_consumer(settings, None, None, **overrides)
        parts = [
            TopicPartition(t, p) for t in self.topics for p in sorted(self.consumer.partitions_for_topic(t) or [0])
        ]
        self.consumer.assign(parts)
        if from_beginning:
            self.consumer.seek_to_beginning(*parts)
        else:
            self.consumer.seek_to_end(*parts)
        self._next = {tp: self.consumer.position(tp) for tp in parts}
        """Each partition's next offset to read: where a replacement client starts."""

    def poll(self, timeout_ms: int) -> dict:
        """New records by partition; ``{}`` after a pause when the poll failed."""
        try:
            if self.consumer is None:
                self._reopen()
            records = self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            log.warning("poll failed (%s: %s); polling again", type(exc).__name__, exc)
            if self.consumer is not None and self.consumer.wedged:
                self._discard()
            time.sleep(timeout_ms / 1000)
            return {}
        for tp, batch in records.items():
            if batch:
                self._next[tp] = batch[-1].offset + 1
        return records

    def at_end(self) -> bool:
        """Whether every partition has been read to its end as the broker reports it now (False
        when the broker cannot say)."""
        try:
            if self.consumer is None:
                self._reopen()
            ends = self.consumer.end_offsets(list(self._next))
        except KafkaError as exc:
            log.info("end offsets unavailable (%s: %s)", type(exc).__name__, exc)
            return False
        return all(self._next[tp] >= end for tp, end in ends.items())

    def _discard(self) -> None:
        """Let the wedged client go (closed on a thread of its own: its close may wait out a bound)."""
        old, self.consumer = self.consumer, None
        log.warning(
            "reader of %s: its Kafka client is wedged; replacing it at the positions read so far",
            ", ".join(self.topics),
        )
        close_aside(old)

    def _reopen(self) -> None:
        consumer = make_consumer(self.settings, None, None, **self._overrides)
        consumer.assign(list(self._next))
        for tp, offset in self._next.items():
            consumer.seek(tp, offset)
        self.consumer = consumer
        self.replaced += 1

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def close_aside(client) -> None:
    """Close a wedged client on a thread of its own: its close may wait out a bound, and fail."""

    def close() -> None:
        try:
            client.close()
        except Exception as exc:  # it is let go either way
            log.info("closing a wedged Kafka client failed: %s", exc)

    threading.Thread(target=close, name="kafka-wedged-close", daemon=True).start()


def ensure_topics(settings: Settings, topics: list[str] | None = None, partitions: int | None = None) -> list[str]:
    """Create missing topics (idempotent) and wait until they exist; returns the ones created."""
    wanted = topics or settings.topics.all()
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name=t,
                            num_partitions=partitions or settings.kafka.num_partitions,
                            replication_factor=1,
                            topic_configs={"max.message.bytes": str(settings.kafka.max_message_bytes)},
                        )
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass
            admin.wait_for_topics(missing, timeout_ms=30_000)
            log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        admin.close()
