"""``emotion consume``: read the per-utterance :class:`~shared.contracts.EmotionEvent` stream.

The reader is a standalone Kafka consumer (no group, nothing committed) assigned every partition
of ``settings.topics.emotions``, from the beginning or from the current end, so it never disturbs
the services' consumer groups and any number of readers can run at once.  Records that do not
decode as an ``emotion_event`` are skipped with a warning.  Delivery is at-least-once, so events
are de-duplicated on ``(call_id, utterance_id)``: the first copy wins.

Output: a table (time, call, speaker, start-end, label, confidence, transcript, flags such as the
modalities the fusion had to do without) or JSON lines (the event as it travelled), and with
``--summary`` an end-of-run view per call: each speaker's emotion timeline and its escalation, if any
(:func:`services.escalation.detect_escalation`).

Library API (the demo and the tests): :func:`consume_events`, :class:`EventTable`, :func:`summarize_calls` ->
:class:`CallSummary`, :func:`render_summaries`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from services.escalation import ESCALATION_TURNS, NEGATIVE_LABELS, Escalation, detect_escalation
from shared.contracts import ContractError, EmotionEvent, decode
from shared.settings import Settings

__all__ = [
    "CallSummary",
    "EventTable",
    "consume_events",
    "format_event",
    "render_summaries",
    "summarize_calls",
    "table_header",
]

log = logging.getLogger("emotion.consume")

POLL_MS = 500
TRANSCRIPT_WIDTH = 48


# ---- reading ------------------------------------------------------------------------------------


def open_reader(settings: Settings, from_beginning: bool, wait_s: float | None, stop: threading.Event | None):
    """A :class:`~shared.kafka_io.TailReader` of every partition of the emotions topic, positioned
    at the beginning or the end.  Waits for the topic to exist (at most ``wait_s``; None: until
    ``stop``); None when it never appeared."""
    from shared.kafka_io import TailReader, make_consumer

    topic = settings.topics.emotions
    client_id = f"{settings.kafka.client_id}-consume-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(settings, None, None, client_id=client_id)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    warned = False
    while not (partitions := consumer.partitions_for_topic(topic)):
        if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()):
            break
        if not warned:
            log.warning("topic %s does not exist yet on %s; waiting", topic, settings.kafka.bootstrap)
            warned = True
        time.sleep(0.5)
    if not partitions:
        consumer.close()
        log.error("topic %s does not exist on %s", topic, settings.kafka.bootstrap)
        return None
    return TailReader(settings, [topic], from_beginning=from_beginning, consumer=consumer, client_id=client_id)


def consume_events(
    settings: Settings,
    calls: Iterable[str] | None = None,
    from_beginning: bool = True,
    timeout_s: float | None = None,
    max_events: int | None = None,
    on_event: Callable[[EmotionEvent], None] | None = None,
    *,
    consumer=None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[EmotionEvent]:
    """Read emotion events until ``timeout_s`` seconds pass without a new one (None: until
    ``stop`` is set or Ctrl-C), or ``max_events`` new ones have been read; returns them in
    arrival order, without duplicates, only of ``calls`` when given.

    ``on_event`` is called with each new event as it arrives.  ``consumer`` (anything with
    ``poll(timeout_ms)`` and ``close()``) defaults to a reader that outlives broker restarts
    (:func:`open_reader`), created and closed here; tests pass a fake.
    """
    wanted = set(calls) if calls else None
    own = consumer is None
    if own:
        consumer = open_reader(settings, from_beginning, timeout_s, stop)
        if consumer is None:
            return []
    seen: set[tuple[str, str]] = set()
    events: list[EmotionEvent] = []
    last_new = clock()
    try:
        while not (stop is not None and stop.is_set()):
            if timeout_s is not None and clock() - last_new >= timeout_s:
                break
            left_ms = POLL_MS if timeout_s is None else int((timeout_s - (clock() - last_new)) * 1000)
            wait_ms = max(1, min(POLL_MS, left_ms))
            for tp, records in consumer.poll(wait_ms).items():
                for record in records:
                    try:
                        event = decode(record.value, EmotionEvent)
                    except ContractError as e:
                        log.warning("skipping %s[%d] offset %d: %s", tp.topic, tp.partition, record.offset, e.reason)
                        continue
                    assert isinstance(event, EmotionEvent)
                    key = (event.call_id, event.utterance_id)
                    if (wanted is not None and event.call_id not in wanted) or key in seen:
                        continue
                    seen.add(key)
                    events.append(event)
                    last_new = clock()
                    if on_event is not None:
                        on_event(event)
                    if max_events is not None and len(events) >= max_events:
                        return events
    finally:
        if own:
            consumer.close()
    return events


# ---- rendering ----------------------------------------------------------------------------------


def confidence(event: EmotionEvent) -> float | None:
    """The probability of the event's label (the highest probability when the label has none)."""
    p = event.probabilities.get(event.label)
    if p is None and event.probabilities:
        p = max(event.probabilities.values())
    return p


def flags(event: EmotionEvent) -> str:
    return f"missing {','.join(event.missing_modalities)}" if event.missing_modalities else ""


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


_ROW = (
    "{time:<8}  {call:<22}  {speaker:<8}  {span:>13}  {label:<9}  {conf:>4}  {text:<"
    + str(TRANSCRIPT_WIDTH)
    + "}  {flags}"
)


def table_header() -> str:
    return _ROW.format(
        time="time",
        call="call",
        speaker="speaker",
        span="start-end s",
        label="label",
        conf="conf",
        text="transcript",
        flags="flags",
    ).rstrip()


def format_event(event: EmotionEvent) -> str:
    """One table row: local time of the event, call, speaker, span, label, confidence, transcript, flags."""
    conf = confidence(event)
    return _ROW.format(
        time=time.strftime("%H:%M:%S", time.localtime(event.created_at)),
        call=_truncate(event.call_id, 22),
        speaker=event.speaker,
        span=f"{event.start:.1f}-{event.end:.1f}",
        label=event.label,
        conf="" if conf is None else f"{conf:.0%}",
        text=_truncate(event.transcript, TRANSCRIPT_WIDTH),
        flags=flags(event),
    ).rstrip()


class EventTable:
    """Writes events to ``stream`` as they arrive: table rows (the header before the first) or, with
    ``as_json``, one JSON object per line, the event as it travelled."""

    def __init__(self, stream: TextIO | None = None, as_json: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self._header_due = not as_json

    def header(self) -> None:
        """Write the table's header now (if not written yet), e.g. before waiting for events."""
        if self._header_due:
            self._header_due = False
            self.stream.write(table_header() + "\n")
            self.stream.flush()

    def add(self, event: EmotionEvent) -> None:
        self.header()
        self.stream.write((event.encode().decode("utf-8") if self.as_json else format_event(event)) + "\n")
        self.stream.flush()


# ---- per-call summary ---------------------------------------------------------------------------


@dataclass
class CallSummary:
    """One call's events in time order, per speaker, and its escalation (None when calm)."""

    call_id: str
    timelines: dict[str, list[EmotionEvent]] = field(default_factory=dict)
    escalation: Escalation | None = None

    @property
    def escalated(self) -> bool:
        return self.escalation is not None

    @property
    def utterances(self) -> int:
        return sum(len(v) for v in self.timelines.values())


def summarize_calls(
    events: Iterable[EmotionEvent],
    escalation_turns: int = ESCALATION_TURNS,
    negative: Collection[str] = NEGATIVE_LABELS,
) -> list[CallSummary]:
    """Per call (in order of first appearance): de-duplicated timelines per speaker (the first copy of
    an utterance wins) and the escalation (:func:`services.escalation.detect_escalation` over
    ``escalation_turns`` utterances, with ``negative`` labels)."""
    by_call: dict[str, dict[str, EmotionEvent]] = {}
    for e in events:
        by_call.setdefault(e.call_id, {}).setdefault(e.utterance_id, e)
    summaries = []
    for call_id, utterances in by_call.items():
        summary = CallSummary(call_id)
        for e in sorted(utterances.values(), key=lambda e: (e.start, e.end, e.utterance_id)):
            summary.timelines.setdefault(e.speaker, []).append(e)
        summary.escalation = detect_escalation(utterances.values(), escalation_turns, negative=negative)
        summaries.append(summary)
    return summaries


def render_summaries(summaries: Sequence[CallSummary]) -> str:
    """A readable block per call: the escalation verdict and each speaker's timeline."""
    blocks = []
    for s in summaries:
        verdict = f"ESCALATION: {s.escalation.reason}" if s.escalation else "no escalation"
        lines = [f"{s.call_id}  {s.utterances} utterance(s)  {verdict}"]
        for speaker in sorted(s.timelines, key=lambda k: ("agent", "customer", "mono").index(k)):
            steps = []
            for e in s.timelines[speaker]:
                conf = confidence(e)
                steps.append(f"{e.start:.1f}s {e.label}" + ("" if conf is None else f" {conf:.0%}"))
            lines.append(f"  {speaker:<8}  " + " -> ".join(steps))
        blocks.append("\n".join(lines))
    n_escalated = sum(s.escalated for s in summaries)
    blocks.append(f"{len(summaries)} call(s), {n_escalated} escalated")
    return "\n\n".join(blocks)


# ---- command ------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  emotion consume                                   # new events as a table, until Ctrl-C
  emotion consume --from-beginning --timeout 5 --summary
  emotion consume --call call-s0-0001 --call call-s0-0002 --from-beginning --timeout 3
  emotion consume --json --from-beginning --timeout 3 | jq .label
  emotion consume --max-events 10                   # the next ten events, then exit
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the examples' lines
    p.description = textwrap.fill(
        "Read the emotions topic with a standalone reader (no consumer group, nothing committed): new events, "
        "or all with --from-beginning; de-duplicated by utterance id; filtered by --call. --summary prints "
        "each call's emotion timeline per speaker and flags an escalation when the customer stays negative "
        "(anger, disgust, fear, sadness) for --escalation-turns utterances in a row or grows more negative "
        "over them.",
        100,
    )
    p.epilog = EXAMPLES
    p.add_argument("--call", action="append", dest="calls", metavar="ID", help="only this call (repeatable)")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="read the topic from its start (default: only events that arrive from now on)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="stop after S seconds without a new event (default: run until Ctrl-C)",
    )
    p.add_argument("--max-events", type=int, metavar="N", help="stop after N events")
    p.add_argument("--json", action="store_true", help="one JSON object per line, the event as it travelled")
    p.add_argument(
        "--summary",
        action="store_true",
        help="at the end, per call: each speaker's emotion timeline and an escalation flag (on stderr with --json)",
    )
    p.add_argument(
        "--escalation-turns",
        type=int,
        default=ESCALATION_TURNS,
        metavar="N",
        help="customer utterances that make an escalation: N negative in a row, or a negative "
        f"probability rising over N (default {ESCALATION_TURNS})",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from kafka.errors import KafkaError

    table = EventTable(sys.stdout, as_json=args.json)
    received: list[EmotionEvent] = []

    def show(event: EmotionEvent) -> None:
        received.append(event)
        table.add(event)

    table.header()
    try:
        consume_events(
            settings,
            calls=args.calls,
            from_beginning=args.from_beginning,
            timeout_s=args.timeout,
            max_events=args.max_events,
            on_event=show,
        )
    except KeyboardInterrupt:
        pass
    except KafkaError as e:
        print(f"cannot read from Kafka at {settings.kafka.bootstrap}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.summary:
        summary = render_summaries(summarize_calls(received, args.escalation_turns, settings.events.negative_labels))
        print("\n" + summary, file=sys.stderr if args.json else sys.stdout)
    return 0
