"""``emotion soak``: N concurrent calls in real time for M minutes on a stack of its own.

Each of the N lines streams calls back to back at real-time pace (a new call id each time, as an
agent takes call after call) until M minutes of wall time have passed; then the pipeline drains.
Every ``--interval`` seconds the soak samples the consumer lag of every service (messages not yet
consumed and committed over all partitions of its inputs) and the resident memory of every
process of the stack.  At the end it checks, and writes to ``benchmarks/results/soak-<device>.*``:

* **lag bounded**: the ASR service's lag over the second half of the streaming is no higher than
  over its first half plus one batch per line (a pipeline slower than real time shows a lag that only
  grows), and every lag is back to zero after the drain;
* **memory flat**: no process grows by more than 10 % (and 50 MB) from the end of the warm-up
  (the first minute or fifth of the run, whichever is longer: models loaded, batches of every
  size seen) to the end; Redis, a cache that fills up by design, passes while it stays under its
  ``maxmemory`` (it evicts by TTL beyond);
* **every utterance answered**: each utterance has an emotion event; none dead-lettered.

On the 2-core development machine the pipeline's real-time capacity is about 4 calls (see
``docs/benchmarks.md``): ``--calls 16`` there shows the lag growing from the first minute, which is
what the soak is for: it tells how many lines a host carries.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
import time
from pathlib import Path

from shared.settings import Settings

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
GROWTH_LIMIT = 0.10
GROWTH_FLOOR_MB = 50.0
WARM_UP_S = 60.0
"""Memory is compared from the later of this and a fifth of the run (models loaded, batches of
every size seen once, caches filled) to the end; a run too short to leave a minute after that is
not judged on memory."""
DRAIN_LIMIT_S = 600.0
"""How long the pipeline may take to drain after the lines stop."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Stream --calls lines of back-to-back calls in real time for --minutes on a stack of its own, sample "
        "every service's consumer lag and every process's memory, drain, and check that lag stayed bounded, "
        "memory did not grow after warm-up and every utterance got its event; writes "
        "benchmarks/results/soak-<device>.{json,md,png}; exit 1 when a check fails."
    )
    parser.add_argument(
        "--calls", type=int, default=16, help="concurrent calls (lines), each streaming in real time (default 16)"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the lines stream (default 10)")
    parser.add_argument(
        "--turns", type=int, nargs=2, default=(5, 8), metavar=("MIN", "MAX"), help="turns per call (default 5 8)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated calls")
    parser.add_argument(
        "--interval", type=float, default=10.0, help="seconds between samples of lag and memory (default 10)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where Triton runs the models"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for soak-<device>.{json,md,png}")
    parser.add_argument("--keep", action="store_true", help="leave the soak stack running afterwards")


def _sources(workload, lines: int, minutes: float, seed: int):
    """Enough calls for ``lines`` lines over ``minutes``, read lazily: the workload's calls again
    under new ids, each with its own faint dither (2 LSB of noise, -80 dBFS), so that every call is
    new audio to the transcript and feature caches, as it is in a call centre, and costs Whisper."""
    import numpy as np

    from emotion.publish import CallSource

    mean = sum(c.duration for c in workload.calls) / len(workload.calls)
    count = lines * (math.ceil(minutes * 60 / mean) + 1)  # one more each: no line runs dry before the end

    def source(k: int) -> CallSource:
        spec = workload.calls[k % len(workload.calls)]

        def load():
            from emotion.publish import load_call

            call = load_call(spec.path, call_id=spec.call_id, language=spec.language)
            dither = np.random.default_rng([seed, k]).integers(-2, 3, call.pcm.shape, dtype=np.int16)
            pcm = np.clip(call.pcm.astype(np.int32) + dither, -32768, 32767).astype(np.int16)
            return dataclasses.replace(call, call_id=f"{spec.call_id}-soak{k:05d}", pcm=pcm)

        return CallSource(f"{spec.path}#{k}", spec.duration, load)

    return [source(k) for k in range(count)]


def verdicts(
    lag_series: list[tuple[float, dict[str, int]]],
    rss_series: dict[str, list[float]],
    lines: int,
    answered: int,
    utterances: int,
    deadletters: int,
    max_batch: int,
    interval_s: float,
    ceilings_mb: dict[str, float] | None = None,
    streamed_s: float | None = None,
) -> dict[str, dict]:
    """The three checks of the module docstring, each with its figures and whether it passed
    (``ok``: True or False; None for memory when the run is too short to judge it).

    ``ceilings_mb``: processes whose memory is a cache with a configured ceiling (Redis and its
    ``maxmemory``, evicting by TTL): filling up is their job; they pass while under the ceiling.
    ``streamed_s``: when the lines stopped (the lag series' clock). The two halves compared are
    those of the streaming only: with the drain in the second half, a lag that grew all through
    the streaming peaks at the boundary and would pass. None: the whole series streamed."""
    samples = [(t, lags) for t, lags in lag_series if lags is not None]
    everything = [lags for _, lags in samples]
    streaming = [lags for t, lags in samples if streamed_s is None or t <= streamed_s]
    asr = [lags.get("asr_alignment", 0) for lags in streaming]
    half = len(asr) // 2
    first, second = max(asr[:half] or [0]), max(asr[half:] or [0])
    final = everything[-1] if everything else {}
    lag = {
        "asr_first_half_max": first,
        "asr_second_half_max": second,
        "final": final,
        "max": {svc: max(lags.get(svc, 0) for lags in everything) for svc in (final or {})},
        "ok": second <= first + lines * max_batch and not any(final.values()),
    }
    growth = {}
    warm_at = max(1, math.ceil(WARM_UP_S / interval_s))
    for label, rss in rss_series.items():
        warm_index = max(len(rss) // 5, warm_at)
        if len(rss) - warm_index < warm_at:  # less than a minute after the warm-up
            continue
        warm, end = rss[warm_index], rss[-1]
        growth[label] = {
            "warm_mb": round(warm, 1),
            "end_mb": round(end, 1),
            "growth": round(end / warm - 1, 3) if warm else 0.0,
        }
    ceilings_mb = ceilings_mb or {}
    for label, ceiling in ceilings_mb.items():
        if label in growth:
            growth[label]["ceiling_mb"] = ceiling

    def grew(label: str, g: dict) -> bool:
        if label in ceilings_mb:
            return g["end_mb"] > ceilings_mb[label]
        return g["end_mb"] - g["warm_mb"] > max(GROWTH_FLOOR_MB, GROWTH_LIMIT * g["warm_mb"])

    grown = [k for k, g in growth.items() if grew(k, g)]
    memory = {"processes": growth, "grown": grown, "ok": (not grown) if growth else None}
    answers = {
        "utterances": utterances,
        "answered": answered,
        "deadletters": deadletters,
        "ok": utterances > 0 and answered == utterances and deadletters == 0,
    }
    return {"lag": lag, "memory": memory, "answers": answers}


REDIS_OVERHEAD_MB = 64.0
"""Redis's own memory beside the ``maxmemory`` of data (buffers, the append-only file's rewrite)."""


def _megabytes(size: str) -> float:
    """A Redis size (``512mb``, ``1gb``, ``100000000``) in MB."""
    m = re.fullmatch(r"(\d+)\s*([kmg]?b?)?", size.strip().lower())
    if not m:
        raise ValueError(f"not a Redis memory size: {size!r}")
    unit = (m.group(2) or "b").rstrip("b") or "b"
    return int(m.group(1)) * {"b": 1e-6, "k": 1e-3, "m": 1.0, "g": 1e3}[unit]


def markdown(result: dict) -> str:
    v = result["verdicts"]
    ok = lambda b: "not judged (run too short)" if b is None else "**met**" if b else "**not met**"  # noqa: E731
    drained = not any(v["lag"]["final"].values())
    ending = (
        f"{result['wall_s'] / 60:.1f} min until drained."
        if drained
        else f"{result['wall_s'] / 60:.1f} min, when the drain's limit ({DRAIN_LIMIT_S / 60:g} min) ran out with the lag above 0."
    )
    lines = [
        f"# Soak: {result['calls']} calls in real time for {result['minutes']:g} minutes ({result['device']['name']})",
        "",
        f"{result['started']}, `{result['command']}`; {result['audio_s'] / 3600:.2f} h of audio in {result['call_count']} calls, "
        + ending,
        "",
        "| check | figure | verdict |",
        "|---|---|---|",
        f"| consumer lag bounded | ASR lag max {v['lag']['asr_first_half_max']} (first half of the streaming) / {v['lag']['asr_second_half_max']} "
        f"(second half) chunks; after the drain {sum(v['lag']['final'].values())} | {ok(v['lag']['ok'])} |",
        f"| memory flat | largest growth after warm-up: {_largest_growth(v['memory'])} | {ok(v['memory']['ok'])} |",
        f"| every utterance answered | {v['answers']['answered']} / {v['answers']['utterances']} utterances, "
        f"{v['answers']['deadletters']} dead letters | {ok(v['answers']['ok'])} |",
        "",
        f"Latency (end of speech to event): p50 {result['latency_s'].get('p50', float('nan')):.2f} s, "
        f"p95 {result['latency_s'].get('p95', float('nan')):.2f} s, max {result['latency_s'].get('max', float('nan')):.2f} s.",
        "",
        "| process | RSS warm MB | RSS end MB | growth |",
        "|---|---|---|---|",
    ]
    for label, g in sorted(v["memory"]["processes"].items()):
        bound = f" (a cache: under its ceiling of {g['ceiling_mb']:.0f} MB)" if "ceiling_mb" in g else ""
        lines.append(f"| {label} | {g['warm_mb']:.0f} | {g['end_mb']:.0f} | {g['growth'] * 100:+.1f} %{bound} |")
    lines += ["", f"![lag and memory over the soak](soak-{result['device']['tag']}.png)", ""]
    return "\n".join(lines)


def _largest_growth(memory: dict) -> str:
    processes = {k: g for k, g in memory["processes"].items() if "ceiling_mb" not in g}
    if not processes:
        return "-"
    label, g = max(processes.items(), key=lambda kv: kv[1]["end_mb"] - kv[1]["warm_mb"])
    return f"{label} {g['warm_mb']:.0f} -> {g['end_mb']:.0f} MB ({g['growth'] * 100:+.1f} %)"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    series = result["lag_series"]
    for svc in sorted({k for _, lags in series for k in lags}):
        ax1.plot([t / 60 for t, _ in series], [lags.get(svc, 0) for _, lags in series], label=svc)
    stopped = result.get("streamed_s", 60 * result["minutes"]) / 60  # the last call ends after --minutes
    ax1.axvline(stopped, color="grey", ls="--", lw=1)
    ax1.set_ylabel("consumer lag (messages)")
    ax1.legend(fontsize=8, ncol=3)
    ax1.set_title(f"{result['calls']} calls in real time for {result['minutes']:g} min ({result['device']['name']})")
    t = [i * result["interval_s"] / 60 for i in range(max((len(v) for v in result["rss_series"].values()), default=0))]
    for label, rss in sorted(result["rss_series"].items(), key=lambda kv: -max(kv[1] or [0]))[:10]:
        ax2.plot(t[: len(rss)], rss, label=label)
    ax2.axvline(stopped, color="grey", ls="--", lw=1)
    ax2.set_xlabel("minutes (dashed: the lines stop, the pipeline drains)")
    ax2.set_ylabel("RSS (MB)")
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace, settings: Settings) -> int:
    from benchmarks.monitor import LagSampler, ProcessSampler, stack_processes
    from benchmarks.pipeline import Collector, Timeline, percentiles, pipeline_inputs
    from benchmarks.run import bench_settings, device_of, fresh_stack, served_model
    from benchmarks.workload import CHUNK_MS, Workload
    from deploy.local import stack
    from deploy.local.services import ServiceProcesses
    from emotion.publish import publish_calls
    from training.serving.export import export_repository

    device = device_of(args.device)
    soak = bench_settings(settings, device)
    soak.stack_name = f"soak-{device['tag']}"
    soak.triton.model_repository = soak.run_dir / "model_repository"
    workload = Workload.generate(soak.run_dir / "calls", max(8, args.calls), args.seed, tuple(args.turns))  # type: ignore[arg-type]
    sources = _sources(workload, args.calls, args.minutes, args.seed)
    model_dir, _ = served_model(settings, soak, None)
    started = time.strftime("%Y-%m-%d %H:%M")
    services = ServiceProcesses(soak)
    fresh_stack(soak)
    export_repository(soak, model_dir=model_dir)
    try:
        log.info("soak: stack up")
        stack.up(soak, timeout_s=900)
        services.start(timeout_s=600)
        collector = Collector(soak, "")
        timeline = Timeline({})
        lag = LagSampler(soak, pipeline_inputs(soak), interval_s=args.interval).start()
        sampler = ProcessSampler(stack_processes(soak, services), interval_s=args.interval).start()
        t0 = time.monotonic()
        stop_at = t0 + args.minutes * 60
        log.info("soak: %d lines in real time for %.1f min (%d calls queued)", args.calls, args.minutes, len(sources))

        def on_sent(chunk) -> None:
            timeline.sample_rates.setdefault(chunk.call_id, chunk.sample_rate)
            timeline.on_sent(chunk)

        report = _publish_until(publish_calls, soak, sources, args.calls, stop_at, on_sent, CHUNK_MS)
        log.info("soak: lines stopped after %.1f min; draining", (time.monotonic() - t0) / 60)
        published = time.monotonic()
        streamed_s = published - lag.started_at  # on the lag series' clock
        drain_deadline, drained_since = published + DRAIN_LIMIT_S, None
        while time.monotonic() < drain_deadline:
            services.check()
            # drained: a lag sample taken after the last chunk was sent says 0 everywhere, every
            # utterance seen has its event, and that holds for two samples (the last utterance
            # of a call comes out of Whisper a little after its chunks are consumed)
            latest = lag.latest(since=published)
            if collector.answered() and latest is not None and not any(latest.values()):
                drained_since = drained_since or time.monotonic()
                if time.monotonic() - drained_since >= 2 * args.interval:
                    break
            else:
                drained_since = None
            time.sleep(1)
        wall = time.monotonic() - t0
        time.sleep(args.interval)  # one more sample after the drain
        processes = sampler.stop()
        lag_stats = lag.stop()
        lag.close()
        collector.stop()
        latencies = [
            collector.events[uid][1] - timeline.wall_time(u.call_id, u.end)
            for uid, (u, _) in collector.utterances.items()
            if uid in collector.events
        ]
        # the soak's own process keeps every message it read: not a pipeline process
        rss_series = {label: track.rss for label, track in sampler.tracks.items() if label != "bench"}
        result = {
            "started": started,
            "command": "emotion " + " ".join(sys.argv[sys.argv.index("soak") :])
            if "soak" in sys.argv
            else "emotion soak",
            "device": device,
            "calls": args.calls,
            "minutes": args.minutes,
            "interval_s": args.interval,
            "call_count": report.calls,
            "audio_s": round(report.audio_s, 1),
            "wall_s": round(wall, 1),
            "streamed_s": round(streamed_s, 1),
            "utterances": len(collector.utterances),
            "events": len(collector.events),
            "duplicate_events": collector.duplicates,
            "deadletters": [d.reason for d in collector.deadletters],
            "latency_s": percentiles(latencies),
            "lag": lag_stats,
            "lag_series": lag.series,
            "rss_series": rss_series,
            "processes": processes,
            "verdicts": verdicts(
                lag.series,
                rss_series,
                args.calls,
                len(set(collector.utterances) & set(collector.events)),
                len(collector.utterances),
                len(collector.deadletters),
                soak.runtime.max_batch,
                args.interval,
                {"redis": _megabytes(soak.redis.maxmemory) + REDIS_OVERHEAD_MB},
                streamed_s=streamed_s,
            ),
        }
    finally:
        services.stop()
        if not args.keep:
            stack.down(soak)
    args.results.mkdir(parents=True, exist_ok=True)
    base = args.results / f"soak-{device['tag']}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    base.with_suffix(".md").write_text(markdown(result))
    plot(result, base.with_suffix(".png"))
    print(markdown(result).split("| process |")[0].rstrip())
    print(f"\nwritten: {base}.json, {base}.md, {base}.png")
    return 1 if any(v["ok"] is False for v in result["verdicts"].values()) else 0


def _publish_until(
    publish_calls, settings: Settings, sources: list, lines: int, stop_at: float, on_sent, chunk_ms: float
):
    """Stream ``sources`` on ``lines`` lines in real time; no new call starts after ``stop_at``
    (the calls under way finish)."""
    return publish_calls(
        settings,
        sources,
        pace="realtime",
        chunk_ms=chunk_ms,
        progress=sys.stderr.isatty(),
        concurrency=lines,
        on_sent=on_sent,
        until=lambda: time.monotonic() >= stop_at,
    )
