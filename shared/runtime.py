"""The one service loop every streaming service runs.

    poll a batch -> decode/validate -> service.process (cache look-up, Triton inference)
    -> produce outputs and dead letters -> wait for the broker's acks -> commit -> metrics

A service only says what is its own (:class:`Service`): its input topic and contract, and how to
turn a batch of valid inputs into outputs.  Delivery is at-least-once: offsets are committed only
after every output of the batch is acknowledged, so a crash replays the uncommitted batch and
downstream consumers de-duplicate on ``utterance_id``.

A service that joins several inputs (graph, fusion) declares them in :meth:`Service.inputs`; one
with timers (the ASR service's silence-timeout flush) returns outputs from :meth:`Service.tick`,
which runs when the service has caught up with its input, and is told since when it has been
caught up without a break: every poll drained what the broker had for it (fewer records than
``max_batch``), the broker answered every lag sample (every ``runtime.lag_interval_s``: end
offsets within a batch of the positions), and its partitions stayed the same.  So "no audio for a
while" is never a backlog nor a broker outage: a consumer cut off from the broker polls nothing
too.  A tick's outputs queue behind the batches in flight and are completed in their turn.

Pipelining.  ``process`` may return a :class:`Deferred` instead of its results: the batch's
inference is still running (requests in flight at Triton).  The loop then polls and submits the
next batches, up to ``runtime.max_in_flight``, while the earlier ones complete; batches are
completed (produced, acknowledged, delivered, committed) strictly in the order they were polled,
so the commit order and the at-least-once guarantee are those of the plain loop.  The ASR service
defers: Whisper keeps every instance busy while chunks keep being segmented.

Two kinds of failure are told apart:

* a bad *message* (contract violation, or :class:`Reject` from the service) goes to the dead-letter
  topic with its reason, and the rest of the batch flows on;
* a failing *dependency* (Triton, Kafka or the Redis state down, :class:`Retry`) commits nothing: every batch in
  flight is dropped (:meth:`Service.abandon`), the consumer seeks back to their first offsets, waits, and tries
  again, so nothing is lost.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from shared.cache import FeatureCache
from shared.contracts import Contract, ContractError, DeadLetter, decode
from shared.kafka_io import close_aside, make_consumer, make_producer
from shared.metrics import ServiceMetrics
from shared.settings import Settings
from shared.state import StateStore

log = logging.getLogger(__name__)

DEADLETTER_PAYLOAD_LIMIT = 64 * 1024
LAG_SAMPLE_GRACE_S = 2.0
"""How much older than ``runtime.lag_interval_s`` the last lag sample may be and still confirm
that the instance is caught up (the loop takes a sample after its poll, which waits up to
``poll_timeout_ms``)."""


@dataclass(frozen=True)
class LagSample:
    """The broker's answer to one lag sample of an instance's partitions."""

    at: float
    """Wall time of the answer."""
    partitions: frozenset[TopicPartition]
    backlog: int
    """Records behind, over all the partitions."""


class Reject(Exception):
    """Raised (or returned) by a service for one input it can never process: dead-lettered."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Retry(Exception):
    """Raised by a service when a dependency failed: the whole batch is retried later."""


def is_dependency_failure(exc: BaseException) -> bool:
    """A failure of what the service depends on (retried), not of the message (dead-lettered):
    :class:`Retry`, Kafka, connection and timeout errors, and errors marked ``retryable``
    (:class:`shared.triton_client.TritonError` when Triton is unavailable or overloaded)."""
    return isinstance(exc, (Retry, KafkaError, ConnectionError, TimeoutError)) or getattr(exc, "retryable", False)


@dataclass
class Output:
    """A message to produce: to ``topic`` or, when None, the service's output topic."""

    message: Contract
    topic: str | None = None


ProcessResult = Sequence[Output | Contract] | Reject
"""Per input: its outputs (possibly none) or a :class:`Reject`."""


class Deferred(ABC):
    """The results of a batch still being computed (see *Pipelining* above)."""

    @abstractmethod
    def wait(self, timeout_s: float) -> bool:
        """Whether the results are ready, waiting at most ``timeout_s`` for them."""

    @abstractmethod
    def result(self) -> list[ProcessResult]:
        """One result per input (as :meth:`Service.process`); may raise (a dependency failure
        drops this and every later batch in flight, which are then replayed)."""


class Completed(Deferred):
    """Results that are already there (what a plain ``process`` returned)."""

    def __init__(self, results: list[ProcessResult]):
        self.results = results

    def wait(self, timeout_s: float) -> bool:
        return True

    def result(self) -> list[ProcessResult]:
        return self.results


def resolve(results: list[ProcessResult] | Deferred) -> list[ProcessResult]:
    """``process``'s return value as results (waiting for a :class:`Deferred`)."""
    return results.result() if isinstance(results, Deferred) else results


@dataclass
class Context:
    """What a service gets from the runtime in :meth:`Service.setup`."""

    settings: Settings
    metrics: ServiceMetrics
    cache: FeatureCache
    """Features and audio: misses and skipped writes when Redis is down."""
    state: StateStore
    """State that must not be lost (call buffers, joins): Redis errors are retried."""
    instance_id: str
    owns: Callable[[str, bytes], bool] = lambda topic, key: True
    """Whether messages of ``topic`` with ``key`` (a call id) come to this instance: the partition
    Kafka's default partitioner gives the key is assigned to it.  Timers act only on what they own."""


class Service(ABC):
    """What a streaming service declares.  Subclasses set the class attributes and ``process``."""

    name: str
    input_topic: str
    input_contract: type[Contract]
    output_topic: str
    retry_alone: bool = True
    """When ``process`` fails on a batch (not a dependency failure), try each message alone and
    dead-letter the ones that still fail.  False for a service whose state spans the batch."""

    def inputs(self) -> dict[str, type[Contract]]:
        """Input topics and the contract each carries; one topic unless the service joins several."""
        return {self.input_topic: self.input_contract}

    def setup(self, ctx: Context) -> None:
        """Open clients (Triton models, ...) once, before the loop starts."""
        self.ctx = ctx

    @abstractmethod
    def process(self, batch: list[Contract]) -> list[ProcessResult] | Deferred:
        """Turn a batch of valid inputs into one result per input, in the same order (or a
        :class:`Deferred` of them)."""

    def delivered(self, outputs: list[Contract]) -> None:
        """Called once the outputs of a processed batch (or of a tick) are acknowledged by the
        broker, before the commit; one call per ``process`` call, in the same order."""

    def abandon(self) -> None:
        """The batches processed since the last :meth:`delivered` were dropped (a dependency
        failed) and will be replayed: forget whatever state they computed."""

    def tick(self, now: float, caught_up_since: float) -> list[Output | Contract]:
        """Timers: called at most every ``runtime.tick_interval_s``, when the service has caught
        up with its input, possibly while batches are in flight.  ``caught_up_since`` is the wall
        time since which it has been caught up without a break (no backlog, the broker reachable,
        the same partitions): a timer that fires on silence counts only the silence after it, as
        before it input may have been held up.  The outputs are produced after the batches' in
        flight and acknowledged, then passed to :meth:`delivered` in that order, as a batch's
        would be."""
        return []

    def close(self) -> None:
        """Release what :meth:`setup` opened."""


@dataclass
class _Pending:
    record: object
    message: Contract | None = None
    error: str | None = None
    error_type: str = ""
    outputs: list[Output] = field(default_factory=list)


@dataclass
class _Batch:
    """A polled batch between its submission and its completion."""

    records: list
    pending: list[_Pending]
    valid: list[_Pending]
    results: Deferred
    report: BatchReport
    started: float


@dataclass
class BatchReport:
    consumed: int = 0
    produced: int = 0
    deadlettered: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    failed: bool = False
    """A dependency failed: nothing of the batch was committed; it will be replayed."""


class ScrapeTargets(Protocol):
    """Where a service instance announces its ``/metrics`` endpoint to Prometheus. ``emotion serve``
    injects file-based discovery (:class:`shared.metrics.FileScrapeTargets`) unless
    ``settings.runtime.register_scrape_target`` is off, as in Kubernetes and compose, where
    Prometheus finds the services itself."""

    def register(self, service: str, instance_id: str, port: int) -> Any:
        """Announce ``instance_id`` of ``service`` on ``port``; returns what :meth:`unregister` takes."""

    def unregister(self, target: Any) -> None:
        """Withdraw a target :meth:`register` announced."""


class ServiceRuntime:
    """Runs one :class:`Service` until stopped (SIGTERM/SIGINT or :meth:`stop`)."""

    def __init__(
        self,
        service: Service,
        settings: Settings,
        group_id: str | None = None,
        scrape_targets: ScrapeTargets | None = None,
    ):
        self.service = service
        self.scrape_targets = scrape_targets
        self.settings = settings
        self.group_id = group_id or f"emotion-{service.name}"
        self.instance_id = f"{service.name}-{uuid.uuid4().hex[:8]}"
        self.metrics = ServiceMetrics(service.name)
        self._stop = threading.Event()
        self.started = threading.Event()
        """Set once the service is set up, registered and subscribed."""
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._target: Any = None
        self._last_lag = 0.0
        self._last_tick = 0.0
        self._contracts = service.inputs()
        self._ctx: Context | None = None
        self.metrics_port: int | None = None
        self._in_flight: deque[_Batch] = deque()
        self._caught_up = False
        """The last poll drained what the broker had for this instance (timers may run)."""
        self._caught_up_since: float | None = None
        """Wall time since which this instance has been caught up without a break, as the broker
        confirmed it (:meth:`_confirm_caught_up`); None while it is not."""
        self._confirmed_partitions: frozenset[TopicPartition] = frozenset()
        self._lag_sample: LagSample | None = None
        """The broker's last answer to :meth:`_update_lag`; None until one, and after a failed one."""
        self._has_timers = type(service).tick is not Service.tick
        """Only a service with timers asks the broker whether it has caught up (a request per tick)."""

    # ---- lifecycle -------------------------------------------------------------------------
    def stop(self, *_args) -> None:
        if not self._stop.is_set():
            log.info("%s: stopping after the current batch", self.instance_id)
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def start(self) -> None:
        s = self.settings
        self.metrics_port = self.metrics.serve(s.runtime.metrics_host, s.runtime.metrics_port)
        if self.scrape_targets is not None:
            self._target = self.scrape_targets.register(self.service.name, self.instance_id, self.metrics_port)
        self._ctx = Context(
            settings=s,
            metrics=self.metrics,
            cache=FeatureCache(s),
            state=StateStore(s),
            instance_id=self.instance_id,
            owns=self.owns,
        )
        self.service.setup(self._ctx)
        self._producer = make_producer(s, on_bound=self._count_bounded)
        self._consumer = self._make_consumer()
        self._declare_series()
        self.metrics.up.labels(self.service.name).set(1)
        self.started.set()
        log.info(
            "%s: consuming %s as group %s, producing %s, metrics on :%d",
            self.instance_id,
            ", ".join(self._contracts),
            self.group_id,
            self.service.output_topic,
            self.metrics_port,
        )

    def _make_consumer(self):
        return make_consumer(self.settings, self.group_id, list(self._contracts), on_bound=self._count_bounded)

    def _count_bounded(self, role: str) -> None:
        self.metrics.kafka_calls_bounded.labels(self.service.name, role).inc()

    def _replace_wedged_consumer(self) -> None:
        """The consumer's calls fail by their bound, none answered: its I/O loop is stuck. The
        batches in flight are dropped (their offsets were never committed) and a new member joins
        the group, which resumes from the committed offsets."""
        log.warning(
            "%s: the Kafka consumer is wedged; dropping %d batch(es) in flight and joining the group again",
            self.service.name,
            len(self._in_flight),
        )
        self._in_flight.clear()
        self.service.abandon()
        self._behind()
        close_aside(self._consumer)
        self._consumer = self._make_consumer()

    def _declare_series(self) -> None:
        """Create the loop's series at zero, so that Prometheus has them before the first batch
        (a rate needs a scrape before the first increment, or the first batch never shows)."""
        m, name = self.metrics, self.service.name
        for topic in self._contracts:
            m.messages.labels(name, topic, "ok")
        m.batch_size.labels(name)
        for stage in ("decode", "process", "produce", "commit", "total"):
            m.stage_seconds.labels(name, stage)
        for role in ("consumer", "producer"):
            m.kafka_calls_bounded.labels(name, role)

    def close(self) -> None:
        self.metrics.up.labels(self.service.name).set(0)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._producer is not None:
            self._producer.flush(timeout=self.settings.runtime.shutdown_timeout_s)
            self._producer.close(timeout=self.settings.runtime.shutdown_timeout_s)
        self.service.close()
        if self._ctx is not None:
            self._ctx.state.close()
        if self.scrape_targets is not None and self._target is not None:
            self.scrape_targets.unregister(self._target)
        log.info("%s: stopped", self.instance_id)

    def run(self, max_batches: int | None = None, ready_file: Path | None = None) -> None:
        """The loop.  ``max_batches`` bounds it (for tests); otherwise runs until stopped.
        ``ready_file`` is written (with the instance id) once the service consumes."""
        self.start()
        if ready_file is not None:
            Path(ready_file).write_text(self.instance_id + "\n")
        done = 0
        try:
            while not self._stop.is_set() and (max_batches is None or done < max_batches):
                if self.run_once():
                    done += 1
                if self._has_timers:
                    self.run_tick()
            self._drain()
        finally:
            self.close()

    # ---- one batch -------------------------------------------------------------------------
    def _poll_batch(self, quick: bool = False) -> list:
        """Up to ``max_batch`` records, waiting ``poll_timeout_ms`` for the first (only
        ``max_wait_ms`` when ``quick``: batches in flight are waiting to be completed) and
        ``max_wait_ms`` more."""
        rt = self.settings.runtime
        assert self._consumer is not None
        records: list = []
        deadline = time.monotonic() + rt.max_wait_ms / 1000
        first = True
        while len(records) < rt.max_batch and not self._stop.is_set():
            timeout = (
                (rt.max_wait_ms if quick else rt.poll_timeout_ms)
                if first
                else max(0, int((deadline - time.monotonic()) * 1000))
            )
            polled = self._consumer.poll(timeout_ms=timeout, max_records=rt.max_batch - len(records))
            for recs in polled.values():
                records.extend(recs)
            if first and not records:
                self._caught_up = True
                return []
            first = False
            if time.monotonic() >= deadline or not polled:
                break
        if len(records) < rt.max_batch:
            self._caught_up = True
        else:
            self._behind()  # a whole batch: maybe a backlog
        return records

    def _behind(self) -> None:
        """Input may be waiting at the broker: timers wait, and their silence starts again."""
        self._caught_up, self._caught_up_since = False, None

    def _confirm_caught_up(self) -> float | None:
        """Since when this instance has been caught up without a break; None while it is not.

        An empty poll alone proves nothing: a consumer cut off from the broker polls nothing
        either (a Kafka restart looked like silence on every call, and the ASR service flushed
        calls mid-utterance).  So the broker must have answered the last lag sample, recently
        (within ``lag_interval_s`` and a grace), for these partitions, with less than a batch
        behind; a failed sample ends the stretch (:meth:`_update_lag`).  New partitions (a
        rebalance) start it again: their input was someone else's until now.  The samples are
        the loop's own every ``lag_interval_s``: asking at each tick would block the loop behind
        the consumer's long-polling fetch (half a second, every tick)."""
        consumer, sample = self._consumer, self._lag_sample
        partitions = frozenset(consumer.assignment()) if consumer is not None and self._caught_up else frozenset()
        fresh_s = self.settings.runtime.lag_interval_s + LAG_SAMPLE_GRACE_S
        if (
            not partitions
            or sample is None
            or time.time() - sample.at > fresh_s
            or sample.partitions != partitions
            or sample.backlog >= self.settings.runtime.max_batch
        ):
            self._behind()
            return None
        if self._caught_up_since is None or partitions != self._confirmed_partitions:
            self._caught_up_since = time.time()
        self._confirmed_partitions = partitions
        return self._caught_up_since

    def owns(self, topic: str, key: bytes) -> bool:
        """See :attr:`Context.owns`."""
        if self._consumer is None:
            return False
        partitions = sorted(self._consumer.partitions_for_topic(topic) or ())
        if not partitions:
            return False
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return TopicPartition(topic, partition) in self._consumer.assignment()

    @contextmanager
    def _timed(self, report: BatchReport, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            report.timings[stage] = dt
            self.metrics.stage_seconds.labels(self.service.name, stage).observe(dt)

    def run_tick(self, force: bool = False) -> int:
        """Run :meth:`Service.tick` when it is due (``force``: now) and the instance is caught up;
        returns the number of outputs produced (or queued behind the batches in flight)."""
        now = time.monotonic()
        if not force and now - self._last_tick < self.settings.runtime.tick_interval_s:
            return 0
        self._last_tick = now
        caught_up_since = self._confirm_caught_up()
        if caught_up_since is None:
            return 0
        svc = self.service
        try:
            outputs = [o if isinstance(o, Output) else Output(o) for o in svc.tick(time.time(), caught_up_since)]
            if outputs:
                pending = [_Pending(record=None, message=o.message) for o in outputs]
                tick = _Batch(
                    [], pending, pending, Completed([[o] for o in outputs]), BatchReport(), time.perf_counter()
                )
                self._in_flight.append(tick)  # behind the batches in flight, completed in its turn
                if len(self._in_flight) == 1 and self._complete().failed:
                    return 0
        except Exception as exc:
            if not is_dependency_failure(exc):
                raise
            log.warning("%s: tick failed (%s); trying again at the next tick", svc.name, exc)
            self._fail(exc, BatchReport())  # the batches in flight too: the service forgot their state
            return 0
        return len(outputs)

    def run_once(self) -> BatchReport | None:
        """One step: poll and submit a batch (unless ``max_in_flight`` batches are in flight:
        then wait up to a poll timeout for the oldest), then complete the oldest batch in flight
        if its results are ready.  While batches are in flight a poll waits only ``max_wait_ms``,
        so that new input keeps being taken in and a finished batch is completed soon after.
        Returns the report of the batch completed (or dropped after a failure) now; None when none was."""
        full = len(self._in_flight) >= self.settings.runtime.max_in_flight
        if full:
            self._behind()  # not polling: input may be piling up at the broker
        try:
            records = [] if full else self._poll_batch(quick=bool(self._in_flight))
        except KafkaError as exc:  # the broker restarting: nothing was taken, nothing to rewind
            self.metrics.errors.labels(self.service.name, type(exc).__name__).inc()
            log.warning(
                "%s: poll failed (%s); trying again in %.1f s",
                self.service.name,
                exc,
                self.settings.runtime.retry_backoff_s,
            )
            self._behind()
            if self._consumer is not None and self._consumer.wedged:
                self._replace_wedged_consumer()
            self._stop.wait(self.settings.runtime.retry_backoff_s)
            return None
        self._update_lag()
        if records:
            failed = self._submit(records)
            if failed is not None:
                return failed
        if not self._in_flight:
            return None
        if self._in_flight[0].results.wait(self.settings.runtime.poll_timeout_ms / 1000 if full else 0.0):
            return self._complete()
        return None

    def _submit(self, records: list) -> BatchReport | None:
        """Decode a polled batch and hand it to the service; None, or the report of a failure
        (every batch in flight dropped and rewound)."""
        t_start = time.perf_counter()
        report = BatchReport(consumed=len(records))
        with self._timed(report, "decode"):
            pending = [self._decode(r) for r in records]
        valid = [p for p in pending if p.message is not None]
        try:
            t0 = time.perf_counter()
            results = self._process([p.message for p in valid]) if valid else []
            report.timings["process"] = time.perf_counter() - t0
        except Exception as exc:
            if not is_dependency_failure(exc):
                raise
            return self._fail(exc, report, records)
        deferred = results if isinstance(results, Deferred) else Completed(results)
        self._in_flight.append(_Batch(records, pending, valid, deferred, report, t_start))
        return None

    def _complete(self) -> BatchReport:
        """Produce the oldest batch's outputs and dead letters, wait for the acks, deliver, commit."""
        batch = self._in_flight[0]
        svc, report, pending, valid = self.service, batch.report, batch.pending, batch.valid
        try:
            t0 = time.perf_counter()
            results = batch.results.result()
            report.timings["process"] = report.timings.get("process", 0.0) + time.perf_counter() - t0
            self.metrics.stage_seconds.labels(svc.name, "process").observe(report.timings["process"])
            if len(results) != len(valid):
                raise AssertionError(f"{svc.name}.process returned {len(results)} results for {len(valid)} inputs")
            for p, result in zip(valid, results):
                if isinstance(result, Reject):
                    p.error, p.error_type = result.reason, "Reject"
                    p.message = None
                else:
                    p.outputs = [o if isinstance(o, Output) else Output(o) for o in result]
            with self._timed(report, "produce"):
                self._produce(pending, report)
            if valid:
                svc.delivered([o.message for p in pending if p.message is not None for o in p.outputs])
            if batch.records:  # a tick's outputs have no input to commit
                with self._timed(report, "commit"):
                    self._commit(batch.records)
        except Exception as exc:
            if not is_dependency_failure(exc):
                raise
            return self._fail(exc, report)
        self._in_flight.popleft()
        m = self.metrics
        if batch.records:
            m.batch_size.labels(svc.name).observe(len(batch.records))
        for p in pending:
            if p.record is not None:
                m.messages.labels(svc.name, p.record.topic, "ok" if p.message is not None else "deadletter").inc()
        m.stage_seconds.labels(svc.name, "total").observe(time.perf_counter() - batch.started)
        return report

    def _fail(self, exc: BaseException, report: BatchReport, records: list | None = None) -> BatchReport:
        """A dependency failed: drop every batch in flight (and ``records``), rewind, back off."""
        svc = self.service
        dropped = [r for b in self._in_flight for r in b.records] + list(records or [])
        self._in_flight.clear()
        svc.abandon()
        self._behind()  # what was dropped is input not taken in: a quiet call may be waiting in it
        self.metrics.errors.labels(svc.name, type(exc).__name__).inc()
        log.warning(
            "%s: %d message(s) not processed (%s); retrying in %.1f s",
            svc.name,
            len(dropped),
            exc,
            self.settings.runtime.retry_backoff_s,
        )
        self._rewind(dropped)
        self._stop.wait(self.settings.runtime.retry_backoff_s)
        report.failed = True
        return report

    def _drain(self) -> None:
        """On stop: complete the batches still in flight (what cannot complete is replayed later)."""
        while self._in_flight:
            if not self._in_flight[0].results.wait(self.settings.runtime.shutdown_timeout_s):
                log.warning(
                    "%s: %d batch(es) still in flight at shutdown; they will be replayed",
                    self.service.name,
                    len(self._in_flight),
                )
                return
            self._complete()  # completed, or failed and every batch dropped

    def _process(self, messages: list[Contract]) -> list[ProcessResult] | Deferred:
        """``service.process``; when it fails on the batch for a reason other than a dependency,
        each message is tried alone and the ones that still fail are rejected with the error, so
        one poisonous message never blocks or loses the others."""
        try:
            return self.service.process(messages)
        except Exception as exc:
            if is_dependency_failure(exc) or not self.service.retry_alone:
                raise
            if len(messages) == 1:
                log.exception("%s: a message failed", self.service.name)
                return [Reject(f"{self.service.name} failed on this message: {type(exc).__name__}: {exc}")]
            log.warning(
                "%s: batch of %d failed (%s: %s); trying each message alone",
                self.service.name,
                len(messages),
                type(exc).__name__,
                exc,
            )
            return [result for m in messages for result in resolve(self._process([m]))]

    def _decode(self, record) -> _Pending:
        if record.value is not None and len(record.value) > self.settings.runtime.max_message_bytes:
            return _Pending(
                record,
                error=f"message of {len(record.value)} bytes exceeds the limit of "
                f"{self.settings.runtime.max_message_bytes}",
                error_type="TooLarge",
            )
        try:
            return _Pending(record, message=decode(record.value, self._contracts.get(record.topic)))
        except ContractError as exc:
            return _Pending(record, error=exc.reason, error_type="ContractError")

    def _produce(self, pending: list[_Pending], report: BatchReport) -> None:
        assert self._producer is not None
        futures = []
        for p in pending:
            if p.message is None:
                futures.append(self._send(self.settings.topics.deadletter, self._dead_letter(p)))
                report.deadlettered += 1
                self.metrics.deadletters.labels(self.service.name, p.error_type).inc()
                log.warning(
                    "%s: dead-lettered %s[%d]@%d: %s",
                    self.service.name,
                    p.record.topic,
                    p.record.partition,
                    p.record.offset,
                    p.error,
                )
                continue
            for out in p.outputs:
                topic = out.topic or self.service.output_topic
                futures.append(self._send(topic, out.message))
                self.metrics.produced.labels(self.service.name, topic).inc()
                report.produced += 1
        self._producer.flush(timeout=self.settings.kafka.request_timeout_ms / 1000)
        for f in futures:
            f.get(timeout=self.settings.kafka.request_timeout_ms / 1000)  # raises if not acknowledged

    def _send(self, topic: str, message: Contract):
        assert self._producer is not None
        return self._producer.send(topic, key=message.key, value=message.encode())

    def _dead_letter(self, p: _Pending) -> DeadLetter:
        r = p.record
        raw = r.value or b""
        truncated = len(raw) > DEADLETTER_PAYLOAD_LIMIT
        return DeadLetter(
            service=self.service.name,
            reason=p.error or "unknown",
            error_type=p.error_type,
            source_topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            source_key=r.key.decode("utf-8", "replace") if r.key else None,
            payload_b64=base64.b64encode(raw[:DEADLETTER_PAYLOAD_LIMIT]).decode("ascii"),
            payload_bytes=len(raw),
            payload_truncated_at=DEADLETTER_PAYLOAD_LIMIT if truncated else None,
        )

    def _commit(self, records: list) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in offsets or offsets[tp].offset <= r.offset:
                offsets[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
        self._consumer.commit(offsets)

    def _rewind(self, records: list) -> None:
        assert self._consumer is not None
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            try:
                self._consumer.seek(tp, offset)
            except (KafkaError, AssertionError, ValueError) as exc:  # partition revoked meanwhile
                log.info("%s: could not rewind %s: %s", self.service.name, tp, exc)

    def _update_lag(self) -> None:
        """Every ``lag_interval_s``: ask the broker how far behind each partition is (the lag
        metric, and the evidence :meth:`_confirm_caught_up` needs); a sample the broker does
        not answer ends the caught-up stretch."""
        now = time.monotonic()
        if now - self._last_lag < self.settings.runtime.lag_interval_s or self._consumer is None:
            return
        self._last_lag = now
        assigned = list(self._consumer.assignment())
        if not assigned:
            return
        try:
            ends = self._consumer.end_offsets(assigned)
            lags = {tp: max(0, ends[tp] - self._consumer.position(tp)) for tp in assigned}
        except (KafkaError, AssertionError, KeyError) as exc:  # the broker away, or a partition revoked meanwhile
            log.debug("lag update failed: %s", exc)
            self._lag_sample = None
            self._behind()
            return
        for tp, lag in lags.items():
            self.metrics.lag.labels(self.service.name, tp.topic, str(tp.partition)).set(lag)
        self._lag_sample = LagSample(time.time(), frozenset(assigned), sum(lags.values()))
