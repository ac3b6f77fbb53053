"""The live side of the dashboard: emotion events from Kafka, aggregated per call.

* :class:`EventStore` keeps, in memory, the last ``per_call`` events of the most recently active
  calls (de-duplicated on ``utterance_id``: delivery is at-least-once) and a ring of the latest
  events with a sequence number, for ``/api/events?since=`` and the Server-Sent Events stream.
  It answers the page's questions: the per-call timelines (one lane per speaker), the escalation
  (:func:`services.escalation.detect_escalation`: ongoing or past), and the emotion mix over the last minutes.
* :class:`EventFeed` is the background thread that fills it: a standalone Kafka consumer (no
  group, nothing committed) assigned every partition of the ``emotions`` topic, starting
  ``backlog`` records before the end of each partition (and, with ``since``, at no record older
  than that time) so a restarted dashboard shows the calls in progress.  It reconnects by itself
  while Kafka is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

from shared.contracts import ContractError, EmotionEvent, decode
from services.escalation import NEGATIVE_LABELS, detect_escalation
from shared.settings import EMOTIONS, Settings

log = logging.getLogger(__name__)


def event_dict(e: EmotionEvent) -> dict:
    """What the page needs of an event (no branches: they are large and not drawn)."""
    confidence = e.probabilities.get(e.label)
    if confidence is None and e.probabilities:
        confidence = max(e.probabilities.values())
    return {
        "call_id": e.call_id,
        "utterance_id": e.utterance_id,
        "speaker": e.speaker,
        "start": e.start,
        "end": e.end,
        "label": e.label,
        "confidence": confidence,
        "transcript": e.transcript,
        "probabilities": e.probabilities,
        "model_version": e.model_version,
        "missing_modalities": list(e.missing_modalities),
        "latency_ms": e.latency_ms,
        "created_at": e.created_at,
    }


@dataclass
class _Call:
    call_id: str
    events: "OrderedDict[str, EmotionEvent]" = field(default_factory=OrderedDict)
    last_seen: float = 0.0
    """Wall time of the newest event (its ``created_at``)."""


class EventStore:
    """Thread-safe in-memory store of the latest emotion events (see the module docstring)."""

    def __init__(
        self,
        per_call: int = 100,
        max_calls: int = 200,
        recent: int = 1000,
        mix_window_s: float = 300.0,
        active_window_s: float = 600.0,
        negative: Collection[str] = NEGATIVE_LABELS,
    ):
        self.per_call = per_call
        self.max_calls = max_calls
        self.mix_window_s = mix_window_s
        self.active_window_s = active_window_s
        self.negative = tuple(negative)
        """The labels that count towards an escalation."""
        self._calls: OrderedDict[str, _Call] = OrderedDict()  # least recently seen first
        self._recent: deque[tuple[int, EmotionEvent]] = deque(maxlen=recent)
        self._seq = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.received = 0
        self.duplicates = 0
        self.invalid = 0

    # ---- writing --------------------------------------------------------------------------
    def add(self, event: EmotionEvent) -> int | None:
        """Store one event; returns its sequence number, or None for a duplicate."""
        with self._changed:
            self.received += 1
            call = self._calls.get(event.call_id)
            if call is None:
                call = self._calls[event.call_id] = _Call(event.call_id)
            else:
                self._calls.move_to_end(event.call_id)
            if event.utterance_id in call.events:
                self.duplicates += 1
                old = call.events[event.utterance_id]
                call.events[event.utterance_id] = event  # a replay may carry a newer model's label
                if old.label == event.label:
                    return None
            else:
                call.events[event.utterance_id] = event
                while len(call.events) > self.per_call:
                    call.events.popitem(last=False)
            call.last_seen = max(call.last_seen, event.created_at)
            while len(self._calls) > self.max_calls:
                self._calls.popitem(last=False)
            self._seq += 1
            self._recent.append((self._seq, event))
            self._changed.notify_all()
            return self._seq

    def add_raw(self, raw: bytes | None) -> int | None:
        """Decode and store one Kafka record's value; invalid ones are counted and skipped."""
        try:
            event = decode(raw, EmotionEvent)
        except ContractError as exc:
            with self._lock:
                self.invalid += 1
            log.debug("skipping an invalid emotion event: %s", exc.reason)
            return None
        assert isinstance(event, EmotionEvent)
        return self.add(event)

    # ---- reading --------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def since(self, seq: int, limit: int = 200, call_id: str | None = None) -> tuple[int, list[dict]]:
        """Events with a sequence number above ``seq`` (oldest first, at most ``limit``, the newest
        ones when there are more), and the last sequence number."""
        with self._lock:
            items = [(s, e) for s, e in self._recent if s > seq and (call_id is None or e.call_id == call_id)]
            last = self._seq
        items = items[-limit:] if limit > 0 else []
        return last, [{"seq": s, **event_dict(e)} for s, e in items]

    def wait(self, seq: int, timeout: float) -> int:
        """Block until an event newer than ``seq`` arrives or ``timeout`` passes; returns the last seq."""
        with self._changed:
            self._changed.wait_for(lambda: self._seq > seq, timeout=timeout)
            return self._seq

    def snapshot(self, now: float | None = None, max_calls: int = 12, span_s: float = 300.0) -> dict:
        """What the page draws: active calls (ongoing escalations first, then past ones, then the rest;
        newest activity first within each group; at most ``max_calls``), counts of active calls, of
        escalated calls and of those still escalating, and the emotion mix."""
        now = time.time() if now is None else now
        with self._lock:
            calls = [(c.call_id, c.last_seen, list(c.events.values())) for c in self._calls.values()]
            stats = {
                "received": self.received,
                "duplicates": self.duplicates,
                "invalid": self.invalid,
                "last_seq": self._seq,
            }
        active = [c for c in calls if now - c[1] <= self.active_window_s]
        active.sort(key=lambda c: c[1], reverse=True)
        timelines = [self._timeline(call_id, last_seen, events, now, span_s) for call_id, last_seen, events in active]
        # ongoing escalations, past ones, then the rest (stable: newest activity first within each group)
        timelines.sort(key=lambda t: (not t["escalated"], not (t["escalation"] or {}).get("ongoing")))
        out_calls = timelines[:max_calls]
        return {
            "now": now,
            "calls": out_calls,
            "active_calls": len(active),
            "escalated_calls": sum(1 for c in timelines if c["escalated"]),
            "escalating_calls": sum(1 for c in timelines if c["escalated"] and c["escalation"]["ongoing"]),
            "mix": self.mix(calls, now),
            "stats": stats,
        }

    def mix(self, calls: list | None = None, now: float | None = None) -> dict:
        """Counts per label (and per speaker) of the events created in the last ``mix_window_s``."""
        now = time.time() if now is None else now
        if calls is None:
            with self._lock:
                calls = [(c.call_id, c.last_seen, list(c.events.values())) for c in self._calls.values()]
        counts = {label: 0 for label in EMOTIONS}
        by_speaker: dict[str, dict[str, int]] = {}
        total = 0
        for _cid, _seen, events in calls:
            for e in events:
                if now - e.created_at > self.mix_window_s:
                    continue
                counts[e.label] = counts.get(e.label, 0) + 1
                sp = by_speaker.setdefault(e.speaker, {})
                sp[e.label] = sp.get(e.label, 0) + 1
                total += 1
        return {"window_s": self.mix_window_s, "total": total, "counts": counts, "by_speaker": by_speaker}

    def _timeline(self, call_id: str, last_seen: float, events: list[EmotionEvent], now: float, span_s: float) -> dict:
        events = sorted(events, key=lambda e: (e.start, e.end, e.utterance_id))
        end = max((e.end for e in events), default=0.0)
        t0 = max(0.0, end - span_s)
        speakers = sorted({e.speaker for e in events}, key=lambda s: {"agent": 0, "customer": 1}.get(s, 2))
        esc = detect_escalation(events, negative=self.negative)
        latest = {}
        for e in events:
            latest[e.speaker] = e.label
        return {
            "call_id": call_id,
            "last_seen": last_seen,
            "idle_s": max(0.0, now - last_seen),
            "t0": t0,
            "t1": max(end, t0 + 1.0),
            "speakers": speakers,
            "latest": latest,
            "escalated": esc is not None,
            "escalation": None if esc is None else asdict(esc),
            "utterances": [
                {
                    "utterance_id": e.utterance_id,
                    "speaker": e.speaker,
                    "start": e.start,
                    "end": e.end,
                    "label": e.label,
                    "confidence": e.probabilities.get(e.label),
                    "transcript": e.transcript,
                    "missing": list(e.missing_modalities),
                }
                for e in events
                if e.end >= t0
            ],
        }


class EventFeed:
    """Background thread: Kafka ``emotions`` -> :class:`EventStore` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        backlog: int = 500,
        since: float | None = None,
        retry_s: float = 3.0,
    ):
        self.settings = settings
        self.store = store
        self.backlog = backlog
        self.since = since
        """Unix time: when set, records older than this (by their Kafka timestamp) are not re-read."""
        self.retry_s = retry_s
        self.topic = settings.topics.emotions
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()
        """Set once every partition is assigned and positioned (tests wait on it before producing)."""
        self.partitions = 0
        self.error: str | None = None
        self.last_record_at: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict:
        return {
            "topic": self.topic,
            "assigned": self.assigned.is_set(),
            "partitions": self.partitions,
            "error": self.error,
            "last_record_at": self.last_record_at,
            "running": bool(self._thread and self._thread.is_alive()),
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._connect()
                if consumer is None:
                    continue
                self.error = None
                while not self._stop.is_set():
                    for records in consumer.poll(timeout_ms=500).values():
                        for r in records:
                            self.store.add_raw(r.value)
                        if records:
                            self.last_record_at = time.time()
            except Exception as exc:  # noqa: BLE001 - Kafka down, topic deleted, ...: retry
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("emotion events: %s; retrying in %.0f s", self.error, self.retry_s)
            finally:
                self.assigned.clear()
                if consumer is not None:
                    try:
                        consumer.close(autocommit=False)
                    except Exception:  # noqa: BLE001
                        pass
            self._stop.wait(self.retry_s)

    def _connect(self):
        from kafka import TopicPartition

        from shared.kafka_io import make_consumer

        consumer = make_consumer(self.settings, None, None, max_poll_records=500)
        try:
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                self.error = f"topic {self.topic!r} does not exist yet"
                consumer.close(autocommit=False)
                self._stop.wait(self.retry_s)
                return None
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
            start = {tp: max(begin[tp], end[tp] - self.backlog) for tp in tps}
            if self.since is not None:
                found = consumer.offsets_for_times({tp: int(self.since * 1000) for tp in tps})
                start = {tp: max(start[tp], found[tp].offset if found[tp] else end[tp]) for tp in tps}
            for tp in tps:
                consumer.seek(tp, start[tp])
                consumer.position(tp)
            self.partitions = len(tps)
            self.assigned.set()
            log.info("emotion events: reading %s (%d partitions, up to %d back)", self.topic, len(tps), self.backlog)
            return consumer
        except Exception:
            consumer.close(autocommit=False)
            raise
