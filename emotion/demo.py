"""``emotion demo``, the main job: calls in, emotion events out, on the real local stack.

1. the model bundle (assembled once) and the default trained model (the shipped one, copied into
   ``<home>/trained/default`` when that holds none: :func:`training.train.ensure_default_model`);
2. the Triton model repository exported from them, and the stack up (Kafka, Redis, Triton, Prometheus);
3. the five services as ``emotion serve NAME`` processes, and the dashboard;
4. calls streamed to ``calls.audio`` (generated synthetic calls, or the given audio files / manifest),
   each emotion event printed as it arrives (a table, or JSON lines with ``--json``);
5. with ``--calls N`` (or given audio): once every utterance has its event, a per-call summary and
   exit 0; otherwise calls keep coming until Ctrl-C.  Everything is stopped cleanly at the end
   (the stack too, unless ``--keep``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import threading
import time
from pathlib import Path

from shared.contracts import EmotionEvent, Utterance, decode
from shared.settings import Settings

log = logging.getLogger("emotion.demo")

SETTLE_S = 6.0
"""After the last call is published: quiet time with every utterance answered before the demo ends."""
SILENT_CALL_S = 45.0
"""The same while some call has given no utterance at all (silence, or audio the VAD rejects)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The main job. Brings the local stack up, serves the default model (the shipped one, trained on "
        "real speech and text corpora, unless you trained or promoted another) in Triton, starts the five services and the "
        "dashboard, streams call audio and prints each emotion event as it arrives. Without --calls or audio it "
        "streams generated calls until Ctrl-C; with them it stops once every utterance has its event, prints a "
        "per-call summary and exits 0."
    )
    parser.epilog = (
        "examples:  emotion demo                       (live until Ctrl-C)\n"
        "           emotion demo --calls 3 --json      (3 generated calls, JSON lines, then exit)\n"
        "           emotion demo call1.wav call2.flac  (your own recordings; stereo = agent,customer)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("audio", nargs="*", type=Path, help="audio files to stream instead of generated calls")
    parser.add_argument("--calls", type=int, default=None, help="stream N calls, wait for all their events, then exit")
    parser.add_argument(
        "--manifest", type=Path, help="JSON-lines manifest of call audio to stream (see emotion publish)"
    )
    parser.add_argument(
        "--pace",
        choices=["realtime", "fast"],
        default=None,
        help="realtime: as a phone line would (default when running live); fast: as fast as "
        "possible (default with --calls)",
    )
    parser.add_argument("--json", action="store_true", help="print each event as one JSON line instead of the table")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--dashboard-port", type=int, default=8088, help="port of the dashboard (0: any free port)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated calls")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _calls(args: argparse.Namespace, settings: Settings, batch: int) -> list:
    """The calls to stream: given audio, a manifest, or ``batch`` generated synthetic calls."""
    from emotion.publish import calls_from_manifest, load_call
    from training.data.calls import generate_calls

    # a call id is used once (the ASR service refuses audio after a call's end): new ids every run
    stamp = time.strftime("%H%M%S")
    if args.audio or args.manifest:  # both, when both are given
        given = [load_call(p) for p in args.audio] + (calls_from_manifest(args.manifest) if args.manifest else [])
        return [dataclasses.replace(c, call_id=f"{c.call_id}-{stamp}") for c in given[: args.calls or None]]
    out = settings.home / "demo" / "calls"
    prefix = f"demo-{stamp}"
    specs = generate_calls(
        out, batch, seed=args.seed, utterances_per_call=(5, 8), call_prefix=prefix, progress=not args.no_progress
    )
    args.seed += 1  # the next batch (live mode) gets new calls
    return [load_call(c.path, call_id=c.call_id, language=c.language) for c in specs]


class EventPrinter:
    """Prints events as they arrive and keeps what the summary needs."""

    def __init__(self, settings: Settings, as_json: bool):
        from services.event_reader import EventTable

        self.settings = settings
        self.as_json = as_json
        self.table = EventTable(sys.stdout, as_json=as_json)
        self.events: dict[str, EmotionEvent] = {}
        self.utterances: dict[str, Utterance] = {}
        self.last_change = time.monotonic()
        self.ready = threading.Event()
        """Set once the reader is positioned at the end of the topics."""

    def run(self, stop: threading.Event, calls: set[str]) -> None:
        from shared.kafka_io import TailReader

        s = self.settings
        reader = TailReader(s, [s.topics.utterances, s.topics.emotions])  # before the first call is published
        self.ready.set()
        try:
            while not stop.is_set():
                for records in reader.poll(300).values():
                    for r in records:
                        self._record(r, calls)
        finally:
            reader.close()

    def _record(self, record, calls: set[str]) -> None:
        if record.topic == self.settings.topics.utterances:
            u = decode(record.value, Utterance)
            if u.call_id in calls:
                self.utterances[u.utterance_id] = u
                self.last_change = time.monotonic()
            return
        e = decode(record.value, EmotionEvent)
        if e.call_id in calls and e.utterance_id not in self.events:
            self.events[e.utterance_id] = e
            self.last_change = time.monotonic()
            self.table.add(e)

    def finished(self, calls: set[str]) -> bool:
        """Every utterance answered and nothing new for a while (longer while a call has given no
        utterance yet: a silent call gives none)."""
        quiet = time.monotonic() - self.last_change
        seen = {u.call_id for u in self.utterances.values()}
        return set(self.utterances) <= set(self.events) and quiet > (SETTLE_S if seen >= calls else SILENT_CALL_S)


def main(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.local import stack
    from deploy.local.services import ServiceProcesses
    from services.event_reader import render_summaries, summarize_calls
    from services.dashboard.server import DashboardServer
    from emotion.publish import publish_calls
    from training import bundle
    from training.serving.export import export_repository
    from training.train import ensure_default_model

    progress = not args.no_progress
    finite = args.calls is not None or bool(args.audio) or args.manifest is not None
    pace = args.pace or ("fast" if finite else "realtime")
    info = sys.stderr if args.json else sys.stdout  # with --json, stdout carries the events only
    t0 = time.monotonic()
    with contextlib.redirect_stdout(info):
        bundle.fetch(settings, progress=progress)
        ensure_default_model(settings)
        export_repository(settings)
        print(stack.up(settings).table())
    services = ServiceProcesses(settings)
    dashboard = None
    stop = threading.Event()
    try:
        services.start()
        dashboard = DashboardServer(settings, "127.0.0.1", args.dashboard_port).start()
        print(
            f"services up in {time.monotonic() - t0:.0f} s; dashboard: {dashboard.url}  logs: {settings.log_dir}",
            file=info,
            flush=True,
        )
        printer = EventPrinter(settings, args.json)
        all_calls: set[str] = set()
        reader = threading.Thread(target=printer.run, args=(stop, all_calls), daemon=True)
        reader.start()
        printer.ready.wait(60)
        batch = args.calls or 3
        while True:
            calls = _calls(args, settings, batch)
            all_calls.update(c.call_id for c in calls)
            report = publish_calls(settings, calls, pace=pace, progress=progress and not args.json)
            log.info("published %s", report)
            if not finite:
                services.check()
                continue
            while not printer.finished(all_calls):
                services.check()
                time.sleep(0.5)
            break
        stop.set()
        reader.join(5)
        if not args.json:
            summaries = summarize_calls(list(printer.events.values()), negative=settings.events.negative_labels)
            print(render_summaries(summaries))
        print(
            f"{len(all_calls)} calls, {len(printer.events)} emotion events in {time.monotonic() - t0:.0f} s", file=info
        )
        return 0
    except KeyboardInterrupt:
        print("\nstopping (Ctrl-C) ...", file=sys.stderr)
        return 130
    finally:
        stop.set()
        if dashboard is not None:
            dashboard.stop()
        services.stop()
        if not args.keep:
            stack.down(settings)
