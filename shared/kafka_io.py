"""Kafka clients configured one way for the whole system.

* The producer is idempotent (kafka-python 3.0's default) with ``acks=all``, so a retried send
  never duplicates a record within a producer session.
* Every client authenticates with SASL/SCRAM (``settings.kafka.security_protocol``) as
  ``settings.kafka.username`` with :attr:`shared.settings.Settings.kafka_password`.
* Consumers never auto-commit: :class:`shared.runtime.ServiceRuntime` commits a batch's offsets
  only after every output of that batch has been acknowledged by the broker (at-least-once).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
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
        options.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.username,
                       sasl_plain_password=settings.kafka_password)  # fmt: skip
    return options


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    """An idempotent producer (acks=all) sized for the contract's largest messages."""
    config = {
        **client_options(settings),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": settings.kafka.max_message_bytes,
        "retries": 2_147_483_647,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(settings: Settings, group_id: str | None, topics: list[str] | None, **overrides) -> KafkaConsumer:
    """A consumer that never auto-commits; ``group_id=None`` gives a standalone reader."""
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
    consumer = KafkaConsumer(**config)
    StallGuard.attach(consumer, settings.kafka.stall_s)
    if topics:
        consumer.subscribe(topics)
    return consumer


class StallGuard:
    """Fails a consumer call that has blocked for longer than ``stall_s``.

    kafka-python 3.0 runs a consumer's I/O on its own thread; a call such as ``poll``, ``commit``
    or ``position`` hands a coroutine to that thread and waits on an event *with no timeout*
    (``NetworkSelector.run``). Across a broker restart under load, such a wait was seen to last
    forever (CI, 2026-12-02: ``poll(timeout_ms=500)`` blocked for 15 minutes while the I/O thread
    idled in ``select``), which would leave a service alive but deaf. The guard's thread watches
    the client's pending waits and fails one older than ``stall_s`` with :class:`KafkaTimeoutError`,
    which the caller meets like any failed call (the runtime waits it out and polls again).

    It reads ``_net._pending_waiters`` (private to kafka-python, pinned ``<3.1``); a client
    without it is left unguarded, with a warning.
    """

    def __init__(self, client, stall_s: float):
        self.stall_s = stall_s
        self.stalls = 0
        """How many waits this guard has failed."""
        self._client = weakref.ref(client)
        self._first_seen: dict[threading.Event, float] = {}
        """Each pending wait (its event) -> when the guard first saw it."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kafka-stall-guard", daemon=True)

    @classmethod
    def attach(cls, client, stall_s: float) -> StallGuard | None:
        if stall_s <= 0:
            return None
        net = getattr(client, "_net", None)
        if net is None or not hasattr(net, "_pending_waiters") or not hasattr(net, "_pending_waiters_lock"):
            log.warning("kafka-python without _net._pending_waiters: consumer calls are not guarded against stalls")
            return None
        guard = cls(client, stall_s)
        client._stall_guard = guard  # lives as long as the client; its thread holds only a weak reference
        guard._thread.start()
        return guard

    def check(self, now: float | None = None) -> int:
        """Fail the waits pending longer than ``stall_s``; returns how many were failed."""
        client = self._client()
        if client is None or getattr(client, "_closed", False):
            self._stop.set()  # the guard ends with its client
            return 0
        net = client._net
        now = time.monotonic() if now is None else now
        stalled = []
        with net._pending_waiters_lock:
            pending = dict(net._pending_waiters)
            self._first_seen = {event: self._first_seen.get(event, now) for event in pending}
            for event, state in pending.items():
                if now - self._first_seen[event] > self.stall_s:
                    net._pending_waiters.pop(event, None)
                    stalled.append((event, state))
        for event, state in stalled:
            if state.get("exception") is None:
                state["exception"] = KafkaTimeoutError(
                    f"a Kafka client call blocked for more than {self.stall_s:.0f} s (failed by the stall guard)")
            event.set()
        if stalled:
            self.stalls += len(stalled)
            log.warning("kafka stall guard: failed %d call(s) blocked over %.0f s (%d so far); the caller retries",
                        len(stalled), self.stall_s, self.stalls)  # fmt: skip
        return len(stalled)

    def _watch(self) -> None:
        interval = min(1.0, self.stall_s / 4)
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception:  # the guard must never take the service down
                log.exception("kafka stall guard: check failed")


def tail_reader(settings: Settings, topics: list[str]) -> KafkaConsumer:
    """A standalone reader (no group, nothing committed) of every partition of ``topics``,
    positioned at their current end (resolved now, so that whatever is produced next is read)."""
    from kafka import TopicPartition

    consumer = make_consumer(settings, None, None)
    consumer.assign([TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [0])])
    consumer.seek_to_end()
    for tp in consumer.assignment():
        consumer.position(tp)
    return consumer


def poll_through_faults(consumer: KafkaConsumer, timeout_ms: int) -> dict:
    """``consumer.poll`` for a reader that outlives broker restarts: a failed poll (the broker
    away, or a wait failed by :class:`StallGuard`) is logged and reads as no records, after a
    pause of ``timeout_ms``. The positions are unchanged, so nothing is skipped."""
    try:
        return consumer.poll(timeout_ms=timeout_ms)
    except KafkaError as exc:
        log.warning("poll failed (%s: %s); polling again", type(exc).__name__, exc)
        time.sleep(timeout_ms / 1000)
        return {}


def make_admin(settings: Settings, **overrides) -> KafkaAdminClient:
    return KafkaAdminClient(**{**client_options(settings), **overrides})


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
