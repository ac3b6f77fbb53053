"""``emotion kafka-restarts``: do Kafka client calls stay bounded while the broker restarts?

A stress script, not a test. On a Kafka of its own (the local stack's broker, nothing else) it runs
the kinds of client the product runs, each on its own thread, while the broker is stopped and
started again ``--restarts`` times (alternately SIGTERM and SIGKILL, then the same data):

* **producers** send records with unique ids, wait for each acknowledgement (``future.get``) and
  flush every few records; a failed send is sent again, under the same id;
* **committers**, one consumer group: ``poll``, then ``commit`` what was polled;
* a **reader** (no group, every partition assigned): ``poll``, ``end_offsets`` and ``position``;
* an **admin** client: ``list_topics``.

Every call is timed against its *bound*: the timeout it was given (or the client's request timeout
where it takes none) plus ``--slack`` seconds. A watchdog records each call still running past
its bound, with the stack of the thread that made it (the kafka-python code path it is stuck in).
After the last restart the committers drain, and the script checks that every acknowledged record
was received by the group: exactly once after de-duplication by id.

``--clients raw`` uses bare kafka-python clients, as the library ships them, to show the library's
behaviour; ``--clients project`` (the default) uses :mod:`shared.kafka_io`'s, which the services,
the CLI and the tests use. Writes ``benchmarks/results/kafka-restarts-<clients>.{json,md}``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.settings import Settings

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
TOPIC = "stress"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Producers, committing group consumers, a standalone reader and an admin client run on a Kafka broker "
        "of their own while it is killed (SIGKILL or SIGTERM, alternately) and restarted --restarts times; "
        "every call is timed against its own timeout, a call past it by --slack seconds is reported with its "
        "stack, and every acknowledged record must reach the group (after de-duplication). --clients raw runs "
        "bare kafka-python clients for comparison. Writes benchmarks/results/kafka- "
        "restarts-<clients>.{json,md}; exit 1 when a call blocked or a record was lost."
    )
    parser.add_argument("--restarts", type=int, default=50, help="broker restarts (default 50)")
    parser.add_argument(
        "--clients",
        choices=("project", "raw"),
        default="project",
        help="the project's bounded clients (shared.kafka_io, default) or bare kafka-python ones",
    )
    parser.add_argument("--producers", type=int, default=2, help="producer threads (default 2)")
    parser.add_argument("--committers", type=int, default=2, help="consumers in one group that commit (default 2)")
    parser.add_argument("--rate", type=float, default=40.0, help="records per second per producer (default 40)")
    parser.add_argument(
        "--up",
        type=float,
        nargs=2,
        default=(3.0, 8.0),
        metavar=("MIN", "MAX"),
        help="seconds of traffic between restarts, drawn uniformly (default 3 8)",
    )
    parser.add_argument(
        "--slack",
        type=float,
        default=None,
        help="seconds a call may run past its own timeout before it counts as blocked (default: "
        "kafka.call_grace_s, the project's bound, plus 1 s of measuring tolerance)",
    )
    parser.add_argument(
        "--drain", type=float, default=120.0, help="seconds the group gets to catch up at the end (default 120)"
    )
    parser.add_argument(
        "--cpu-load",
        type=int,
        default=0,
        metavar="N",
        help="busy processes running beside the clients, to starve their I/O threads the way the "
        "pipeline's encoders do on a 2-core CI machine (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for kafka-restarts-<clients>.{json,md}")


# ---- timing every call against its bound ---------------------------------------------------------


@dataclass
class Blocked:
    """A call that ran past its bound."""

    role: str
    call: str
    bound_s: float
    at_restart: int
    stack: list[str]
    """The innermost frames of the calling thread when the watchdog saw it past its bound."""
    returned_after_s: float | None = None
    """How long it took in the end; None: still blocked when the run ended."""


@dataclass
class _Running:
    role: str
    call: str
    bound_s: float
    thread: int
    t0: float
    blocked: Blocked | None = None


class CallClock:
    """Times every client call; a watchdog thread catches the ones past their bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self.durations: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.blocked: list[Blocked] = []
        self.restart = 0
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="call-watchdog", daemon=True)
        self._watchdog.start()

    def call(self, role: str, name: str, bound_s: float, fn, *args, **kwargs):
        token = object()
        key = id(token)
        with self._lock:
            self._running[key] = _Running(role, name, bound_s, threading.get_ident(), time.monotonic())
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.errors[f"{role}.{name}: {type(exc).__name__}"] += 1
            raise
        finally:
            with self._lock:
                running = self._running.pop(key)
            took = time.monotonic() - running.t0
            self.durations[f"{role}.{name}"].append(took)
            if running.blocked is not None:
                running.blocked.returned_after_s = round(took, 1)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            frames = sys._current_frames()
            with self._lock:
                for r in self._running.values():
                    if r.blocked is None and now - r.t0 > r.bound_s:
                        frame = frames.get(r.thread)
                        stack = (
                            [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)][
                                -12:
                            ]
                            if frame
                            else []
                        )
                        r.blocked = Blocked(r.role, r.call, r.bound_s, self.restart, stack)
                        self.blocked.append(r.blocked)
                        log.warning(
                            "BLOCKED %s.%s past its %.1f s bound at restart %d:\n  %s",
                            r.role,
                            r.call,
                            r.bound_s,
                            self.restart,
                            "\n  ".join(stack),
                        )

    def stop(self) -> None:
        self._stop.set()


# ---- the clients -------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What was acknowledged and what was received, by record id."""

    acked: set[str] = field(default_factory=set)
    group_received: collections.Counter[str] = field(default_factory=collections.Counter)
    reader_received: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Clients:
    """Makes the clients, bare kafka-python ones or the project's."""

    def __init__(self, settings: Settings, kind: str):
        self.settings, self.kind = settings, kind
        self.bounded: collections.Counter[str] = collections.Counter()
        """Calls failed by the project's bound, per client role (``project`` clients only)."""

    def _on_bound(self, role: str) -> None:
        self.bounded[role] += 1

    def producer(self):
        from shared.kafka_io import client_options, make_producer

        if self.kind == "project":
            return make_producer(self.settings, on_bound=self._on_bound, client_id="stress-producer")
        from kafka import KafkaProducer

        return KafkaProducer(
            **{**client_options(self.settings), "client_id": "stress-producer"},
            enable_idempotence=True,
            acks="all",
            retries=2_147_483_647,
            linger_ms=5,
        )

    def consumer(self, group: str | None):
        from shared.kafka_io import client_options, make_consumer

        options = dict(
            client_id=f"stress-{'committer' if group else 'reader'}",
            max_poll_records=200,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        if self.kind == "project":
            return make_consumer(self.settings, group, None, on_bound=self._on_bound, **options)
        from kafka import KafkaConsumer

        return KafkaConsumer(
            **{**client_options(self.settings), **options},
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=2000,
        )

    def admin(self):
        from shared.kafka_io import client_options, make_admin

        if self.kind == "project":
            return make_admin(self.settings, on_bound=self._on_bound, client_id="stress-admin")
        from kafka import KafkaAdminClient

        return KafkaAdminClient(**{**client_options(self.settings), "client_id": "stress-admin"})


def _producer_loop(
    k: int, clients: Clients, clock: CallClock, ledger: Ledger, rate: float, stop: threading.Event
) -> None:
    request_s = clients.settings.kafka.request_timeout_ms / 1000
    producer = clients.producer()
    n, pending = 0, None
    while not stop.is_set():
        record_id = pending or f"p{k}-{n}"
        try:
            future = clock.call(
                "producer",
                "send",
                request_s + SLACK[0],
                producer.send,
                TOPIC,
                key=record_id.encode(),
                value=record_id.encode(),
            )
            clock.call("producer", "get", 10 + SLACK[0], future.get, timeout=10)
            ledger.acked.add(record_id)
            pending = None
            n += 1
            if n % 50 == 0:
                clock.call("producer", "flush", 5 + SLACK[0], producer.flush, timeout=5)
        except Exception:
            pending = record_id  # sent again, same id: a duplicate is possible, a loss is not
            stop.wait(0.5)
            continue
        stop.wait(1 / rate)
    try:
        producer.close(timeout=5)
    except Exception:
        pass


def _committer_loop(clients: Clients, clock: CallClock, ledger: Ledger, stop: threading.Event) -> None:
    from kafka import OffsetAndMetadata

    request_ms = clients.settings.kafka.request_timeout_ms
    consumer = clients.consumer("stress-group")
    consumer.subscribe([TOPIC])
    while not stop.is_set():
        try:
            polled = clock.call("committer", "poll", 0.5 + SLACK[0], consumer.poll, timeout_ms=500)
        except Exception:
            stop.wait(0.5)
            continue
        if not polled:
            continue
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in polled.items()}
        try:
            clock.call(
                "committer", "commit", request_ms / 1000 + SLACK[0], consumer.commit, offsets, timeout_ms=request_ms
            )
        except Exception:
            pass  # not committed: the records come again (at-least-once)
        with ledger.lock:
            for records in polled.values():
                ledger.group_received.update(r.value.decode() for r in records)
    try:
        consumer.close(autocommit=False, timeout_ms=5000)
    except Exception:
        pass


def _reader_loop(clients: Clients, clock: CallClock, ledger: Ledger, stop: threading.Event) -> None:
    from kafka import TopicPartition

    request_ms = clients.settings.kafka.request_timeout_ms
    consumer = clients.consumer(None)
    partitions = [TopicPartition(TOPIC, p) for p in range(2)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    last_offsets = 0.0
    while not stop.is_set():
        try:
            polled = clock.call("reader", "poll", 0.5 + SLACK[0], consumer.poll, timeout_ms=500)
            with ledger.lock:
                for records in polled.values():
                    ledger.reader_received.update(r.value.decode() for r in records)
            if time.monotonic() - last_offsets > 2:
                last_offsets = time.monotonic()
                clock.call(
                    "reader",
                    "end_offsets",
                    request_ms / 1000 + SLACK[0],
                    consumer.end_offsets,
                    partitions,
                    timeout_ms=request_ms,
                )
                clock.call(
                    "reader",
                    "position",
                    request_ms / 1000 + SLACK[0],
                    consumer.position,
                    partitions[0],
                    timeout_ms=request_ms,
                )
        except Exception:
            stop.wait(0.5)
    try:
        consumer.close(autocommit=False, timeout_ms=5000)
    except Exception:
        pass


def _admin_loop(clients: Clients, clock: CallClock, stop: threading.Event) -> None:
    request_s = clients.settings.kafka.request_timeout_ms / 1000
    admin = None
    while not stop.wait(3):
        try:
            if admin is None:
                admin = clock.call("admin", "connect", request_s + SLACK[0], clients.admin)
            clock.call("admin", "list_topics", request_s + SLACK[0], admin.list_topics)
        except Exception:
            pass
    if admin is not None:
        try:
            admin.close()
        except Exception:
            pass


SLACK = [10.0]
"""The slack past each call's own timeout (``--slack``); a list so the loops read the one value set by main."""


# ---- the broker restarts -----------------------------------------------------------------------------


def _restart_broker(settings: Settings, hard: bool) -> float:
    """Stop Kafka (SIGKILL to its group when ``hard``, else the stack's SIGTERM stop) and start it
    again on the same data; returns the seconds it was away."""
    from deploy.local import stack
    from deploy.local.process import PidRecord, port_is_free
    from deploy.local.stack import COMPONENTS

    t0 = time.monotonic()
    if hard:
        record = PidRecord.read(COMPONENTS["kafka"](settings).pid_file)
        if record is not None:
            try:
                os.killpg(record.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    stack.down(settings, ["kafka"])
    # a killed broker's accepted connections linger in FIN-WAIT for a moment, holding its ports
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        port_is_free(settings.kafka.host, p) for p in (settings.kafka.port, settings.kafka.controller_port)
    ):
        time.sleep(0.5)
    stack.up(settings, ["kafka"], timeout_s=180)
    return time.monotonic() - t0


def _burn() -> None:
    """Spin on one core until terminated (``--cpu-load``)."""
    x = 0
    while True:
        x = (x * 1_103_515_245 + 12_345) % 2_147_483_648


def run(args: argparse.Namespace, settings: Settings) -> dict:
    from deploy.local import stack
    from deploy.local.stack import isolated
    from shared.kafka_io import ensure_topics

    if args.slack is None:
        args.slack = settings.kafka.call_grace_s + 1.0
    SLACK[0] = args.slack
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="kafka-restarts-"))
    s = isolated(settings, "kafka-restarts", home=home)
    stack.up(s, ["kafka"], timeout_s=180)
    ensure_topics(s, [TOPIC], partitions=2)
    clock, ledger, stop = CallClock(), Ledger(), threading.Event()
    clients = Clients(s, args.clients)
    producers_stop = threading.Event()
    threads = [
        threading.Thread(
            target=_producer_loop,
            args=(k, clients, clock, ledger, args.rate, producers_stop),
            daemon=True,
            name=f"producer-{k}",
        )
        for k in range(args.producers)
    ]
    threads += [
        threading.Thread(
            target=_committer_loop, args=(clients, clock, ledger, stop), daemon=True, name=f"committer-{k}"
        )
        for k in range(args.committers)
    ]
    threads += [
        threading.Thread(target=_reader_loop, args=(clients, clock, ledger, stop), daemon=True, name="reader"),
        threading.Thread(target=_admin_loop, args=(clients, clock, stop), daemon=True, name="admin"),
    ]
    burners = [multiprocessing.Process(target=_burn, daemon=True, name=f"cpu-load-{k}") for k in range(args.cpu_load)]
    for p in burners:
        p.start()
    for t in threads:
        t.start()
    away: list[float] = []
    t_start = time.monotonic()
    try:
        from tqdm import tqdm

        for i in tqdm(range(args.restarts), desc="broker restarts", unit="restart", file=sys.stderr):
            time.sleep(rng.uniform(*args.up))
            clock.restart = i + 1
            away.append(_restart_broker(s, hard=i % 2 == 1))
        time.sleep(args.up[1])
        producers_stop.set()
        for t in threads[: args.producers]:
            t.join(30)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and not ledger.acked <= set(ledger.group_received):
            time.sleep(1)
    finally:
        for p in burners:
            p.terminate()
        stop.set()
        producers_stop.set()
        for t in threads:
            t.join(15)
        clock.stop()
        stack.down(s)
    missing = sorted(ledger.acked - set(ledger.group_received))
    summary = {
        "clients": args.clients,
        "kafka_python": __import__("kafka").__version__,
        "restarts": args.restarts,
        "cpu_load": args.cpu_load,
        "hard_restarts": args.restarts // 2,
        "broker_away_s": {
            "median": round(sorted(away)[len(away) // 2], 1) if away else None,
            "max": round(max(away), 1) if away else None,
        },
        "wall_s": round(time.monotonic() - t_start, 1),
        "slack_s": args.slack,
        "calls": {
            name: {"count": len(d), "max_s": round(max(d), 2), "p99_s": round(sorted(d)[int(0.99 * (len(d) - 1))], 2)}
            for name, d in sorted(clock.durations.items())
        },
        "errors": dict(clock.errors.most_common()),
        "failed_by_bound": dict(clients.bounded),
        "blocked": [asdict(b) for b in clock.blocked],
        "threads_stuck_at_end": [t.name for t in threads if t.is_alive()],
        "acked": len(ledger.acked),
        "group_received": sum(ledger.group_received.values()),
        "group_duplicates": sum(c - 1 for c in ledger.group_received.values()),
        "missing_after_dedup": len(missing),
        "missing_examples": missing[:10],
        "reader_received_distinct": len(ledger.reader_received),
    }
    summary["ok"] = not summary["blocked"] and not missing and not summary["threads_stuck_at_end"]
    return summary


def render(summary: dict) -> str:
    lines = [
        f"# Kafka client calls across {summary['restarts']} broker restarts ({summary['clients']} clients)",
        "",
        f"kafka-python {summary['kafka_python']}; {summary['hard_restarts']} of the restarts SIGKILL, the rest SIGTERM; "
        f"broker away median {summary['broker_away_s']['median']} s, longest {summary['broker_away_s']['max']} s; "
        f"run {summary['wall_s']} s; {summary.get('cpu_load', 0)} busy process(es) beside the clients. A call is blocked when it runs {summary['slack_s']} s past its own timeout.",
        "",
        "| call | count | p99 s | max s |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {c['count']} | {c['p99_s']} | {c['max_s']} |" for name, c in summary["calls"].items()]
    lines += [
        "",
        f"**Calls blocked past their bound: {len(summary['blocked'])}**; threads stuck at the end: "
        f"{', '.join(summary['threads_stuck_at_end']) or 'none'}.",
        "",
    ]
    for b in summary["blocked"]:
        took = "never returned" if b["returned_after_s"] is None else f"returned after {b['returned_after_s']} s"
        lines += [
            f"- {b['role']}.{b['call']} (bound {b['bound_s']} s, restart {b['at_restart']}): {took}",
            "  ```",
            *[f"  {f}" for f in b["stack"]],
            "  ```",
        ]
    lines += [
        "",
        f"Delivery: {summary['acked']} records acknowledged; the group received {summary['group_received']} "
        f"({summary['group_duplicates']} repeats); **{summary['missing_after_dedup']} acknowledged records missing** "
        "after de-duplication.",
        "",
        "Errors raised by calls (each met by its caller: retried or re-polled):",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in summary["errors"].items()] or ["- none"]
    if summary["clients"] == "project":
        failed = summary.get("failed_by_bound", {})
        lines += [
            "",
            "Calls failed by the project's bound (`shared.kafka_io.CallBound`), per client role: "
            + (", ".join(f"{role} {n}" for role, n in sorted(failed.items())) or "none")
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, settings: Settings) -> int:
    summary = run(args, settings)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"kafka-restarts-{args.clients}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(render(summary))
    print(render(summary))
    return 0 if summary["ok"] else 1
