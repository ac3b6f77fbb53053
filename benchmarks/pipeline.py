"""End to end on the real stack: N concurrent calls in, one emotion event per utterance out.

One run (:func:`run_calls`) publishes the first N workload calls (``emotion publish``'s
:func:`~emotion.publish.publish_calls`, all calls at once, in real time or as fast as possible)
while a reader notes when each utterance and each event arrives, and the samplers watch CPU,
memory and consumer lag.  The run ends when the ASR service has consumed every chunk and every
utterance has its event.

Times, all on this host's clock (``time.time()``):

* *audio end* of an utterance: when the chunk holding its last sample was handed to Kafka;
* *endpoint*: when the chunk that completes it for the voice-activity detector was (the one
  holding ``min_silence_s`` after its speech, or the call's last chunk);
* the message creation times the services stamp, and the reader's arrival times.

Latency of an utterance = its event's arrival - its audio end, cut into stages: ``endpointing``
(waiting for the pause that ends it), ``asr`` (endpoint -> utterance message: queueing and
Whisper), ``text``, ``speech``, ``graph``, ``fusion`` (from the event's per-stage latencies) and
``delivery`` (event message -> reader).  Throughput = seconds of call audio / wall seconds from
the first chunk sent to the last event received.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from benchmarks.monitor import LagSampler, ProcessSampler, service_counters, stack_processes
from benchmarks.workload import CHUNK_MS, Workload
from deploy.local.services import PIPELINE, ServiceProcesses
from emotion.publish import chunk_frames, publish_calls
from shared.contracts import AudioChunk, ContractError, DeadLetter, EmotionEvent, Utterance, decode
from shared.settings import Settings

log = logging.getLogger(__name__)

STAGES = ("endpointing", "asr", "text", "speech", "graph", "fusion", "delivery")
CACHED_KINDS = ("asr", "text", "speech")
"""Content-addressed caches of :mod:`shared.cache` (``emotion:<kind>:...``) that a cold run clears."""
SETTLE_S = 1.5
"""Quiet time after the last event, so that a late duplicate would still be counted."""


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, float)
    if a.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size),
        "p50": round(float(p50), 4),
        "p95": round(float(p95), 4),
        "p99": round(float(p99), 4),
        "mean": round(float(a.mean()), 4),
        "max": round(float(a.max()), 4),
    }


class Collector:
    """Reads ``utterances``, ``emotions`` and ``deadletter`` from their current end and keeps the
    messages of calls whose id ends with ``suffix``, with their arrival times."""

    def __init__(self, settings: Settings, suffix: str):
        from shared.kafka_io import TailReader

        t = settings.topics
        self.topics = t
        self.suffix = suffix
        self.utterances: dict[str, tuple[Utterance, float]] = {}
        self.events: dict[str, tuple[EmotionEvent, float]] = {}
        self.duplicates = 0
        self.deadletters: list[DeadLetter] = []
        self._reader = TailReader(settings, [t.utterances, t.emotions, t.deadletter])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="collector", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for records in self._reader.poll(100).values():
                now = time.time()
                for r in records:
                    self._take(r, now)

    def _take(self, record, now: float) -> None:
        try:
            message = decode(record.value)
        except ContractError as exc:
            log.warning("unreadable %s message: %s", record.topic, exc.reason)
            return
        if isinstance(message, DeadLetter):
            if (message.source_key or "").endswith(self.suffix):
                self.deadletters.append(message)
            return
        if not message.call_id.endswith(self.suffix):  # type: ignore[attr-defined]
            return
        book = self.utterances if isinstance(message, Utterance) else self.events
        if message.utterance_id in book:  # type: ignore[attr-defined]
            self.duplicates += isinstance(message, EmotionEvent)
        else:
            book[message.utterance_id] = (message, now)  # type: ignore[index,attr-defined]

    def answered(self) -> bool:
        return set(self.utterances) <= set(self.events)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._reader.close()


@dataclass
class Timeline:
    """When each chunk of each call was handed to Kafka."""

    sample_rates: dict[str, int]
    sent: dict[str, list[float]] = field(default_factory=dict)

    def on_sent(self, chunk: AudioChunk) -> None:
        self.sent.setdefault(chunk.call_id, []).append(time.time())

    def wall_time(self, call_id: str, t: float) -> float:
        """When the chunk holding the sample at ``t`` seconds into the call was sent (the last
        chunk for times past the end)."""
        step = chunk_frames(self.sample_rates[call_id], CHUNK_MS)
        times = self.sent[call_id]
        k = math.ceil(t * self.sample_rates[call_id] / step) - 1
        return times[min(max(k, 0), len(times) - 1)]


def clear_caches(settings: Settings) -> int:
    """Delete the cached transcripts and features (a cold run); returns the keys deleted."""
    from shared.cache import FeatureCache

    client = FeatureCache(settings).client
    deleted = 0
    for kind in CACHED_KINDS:
        keys = list(client.scan_iter(match=f"emotion:{kind}:*", count=1000))
        for lo in range(0, len(keys), 1000):
            deleted += client.delete(*keys[lo : lo + 1000])
    return deleted


def triton_statistics(settings: Settings) -> dict[str, dict[str, int]]:
    """Per model: requests, executions and the summed queue / compute nanoseconds so far."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=settings.triton.grpc_url)
    try:
        stats = client.get_inference_statistics(as_json=True).get("model_stats", [])
    finally:
        client.close()
    out: dict[str, dict[str, int]] = {}
    for m in stats:
        inf = m.get("inference_stats", {})
        row = out.setdefault(
            m["name"], {"requests": 0, "executions": 0, "inferences": 0, "queue_ns": 0, "compute_ns": 0}
        )
        row["requests"] += int(inf.get("success", {}).get("count", 0))
        row["executions"] += int(m.get("execution_count", 0))
        row["inferences"] += int(m.get("inference_count", 0))
        row["queue_ns"] += int(inf.get("queue", {}).get("ns", 0))
        row["compute_ns"] += int(inf.get("compute_infer", {}).get("ns", 0))
    return out


def triton_delta(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Per model over a run: requests, rows per execution, mean queue and compute ms per request."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        d = {k: a[k] - b.get(k, 0) for k in a}
        if d["requests"] <= 0:
            continue
        out[name] = {
            "requests": d["requests"],
            "rows_per_execution": round(d["inferences"] / max(1, d["executions"]), 2),
            "queue_ms": round(d["queue_ns"] / d["requests"] / 1e6, 1),
            "compute_ms_per_execution": round(d["compute_ns"] / max(1, d["executions"]) / 1e6, 1),
        }
    return out


def cache_counts(settings: Settings) -> dict[str, dict[str, float]]:
    """Cache look-ups so far, per service and result (hit, miss)."""
    out: dict[str, dict[str, float]] = {}
    for labels, value in service_counters(settings, "emotion_cache_requests_total").items():
        d = dict(labels)
        out.setdefault(d["service"], {}).setdefault(d["result"], 0.0)
        out[d["service"]][d["result"]] += value
    return out


@dataclass
class RunOutcome:
    result: dict
    """The figures (JSON-ready)."""
    utterances: list[Utterance]
    """The run's utterances as the ASR service published them."""


def pipeline_inputs(settings: Settings) -> dict[str, tuple[str, list[str]]]:
    """Service -> (its consumer group, its input topics)."""
    from services.registry import SERVICES

    return {name: (f"emotion-{name}", list(SERVICES[name](settings).inputs())) for name in PIPELINE}


def run_calls(
    settings: Settings,
    services: ServiceProcesses,
    workload: Workload,
    n: int,
    pace: str,
    tag: str,
    timeout_s: float | None = None,
) -> RunOutcome:
    """Stream the first ``n`` workload calls at ``pace`` and measure (see the module docstring)."""
    calls = workload.audio(n, tag)
    audio_s = sum(c.duration for c in calls)
    timeout_s = timeout_s or 120 + 3 * audio_s
    timeline = Timeline({c.call_id: c.sample_rate for c in calls})
    lag = LagSampler(settings, pipeline_inputs(settings))
    collector = Collector(settings, f"-{tag}")
    triton_before, cache_before = triton_statistics(settings), cache_counts(settings)
    sampler = ProcessSampler(stack_processes(settings, services)).start()
    lag.start()
    log.info("bench %s: %d call(s), %.0f s of audio, %s", tag, n, audio_s, pace)
    t_start = time.time()
    report = publish_calls(
        settings,
        calls,
        pace=pace,
        chunk_ms=CHUNK_MS,
        progress=False,
        concurrency=n,  # type: ignore[arg-type]
        on_sent=timeline.on_sent,
    )
    if not report.ok:
        raise RuntimeError(f"bench {tag}: publishing failed: {report.summary()}")
    published = time.monotonic()
    deadline = published + timeout_s
    done_since = None
    while time.monotonic() < deadline:
        services.check()
        lags = lag.latest(since=published)  # the sampler's (an admin request per check would load the broker)
        done = collector.answered() and lags is not None and lags["asr_alignment"] == 0
        if done and done_since is None:
            done_since = time.monotonic()
        elif not done:
            done_since = None
        if done_since is not None and time.monotonic() - done_since > SETTLE_S:
            break
        time.sleep(0.25)
    else:
        log.warning("bench %s: not every utterance answered within %.0f s", tag, timeout_s)
    collector.stop()
    processes = sampler.stop()
    lags = lag.stop()
    lag.close()
    triton = triton_delta(triton_before, triton_statistics(settings))
    cache_after = cache_counts(settings)
    cache = {
        svc: {k: v - cache_before.get(svc, {}).get(k, 0.0) for k, v in counts.items()}
        for svc, counts in cache_after.items()
    }
    result = _summarise(
        settings, tag, n, pace, audio_s, t_start, timeline, collector, processes, lags, lag.series, triton, cache
    )
    return RunOutcome(result, [u for u, _ in collector.utterances.values()])


def _summarise(
    settings: Settings,
    tag: str,
    n: int,
    pace: str,
    audio_s: float,
    t_start: float,
    timeline: Timeline,
    collector: Collector,
    processes: dict,
    lags: dict,
    lag_series: list,
    triton: dict,
    cache: dict,
) -> dict:
    seg = settings.segmentation
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    overall = []
    for uid, (u, _received) in sorted(collector.utterances.items()):
        if uid not in collector.events:
            continue
        e, e_received = collector.events[uid]
        audio_end = timeline.wall_time(u.call_id, u.end)
        endpoint = max(audio_end, timeline.wall_time(u.call_id, u.end - seg.speech_pad_s + seg.min_silence_s))
        overall.append(e_received - audio_end)
        stages["endpointing"].append(endpoint - audio_end)
        stages["asr"].append(max(0.0, u.created_at - endpoint))
        for stage in ("text", "speech", "graph", "fusion"):
            stages[stage].append(e.latency_ms.get(stage, 0.0) / 1000)
        stages["delivery"].append(max(0.0, e_received - e.created_at))
    first_sent = min(t[0] for t in timeline.sent.values())
    last = max((t for _, t in collector.events.values()), default=time.time())
    wall = last - first_sent
    missing = sorted(set(collector.utterances) - set(collector.events))
    calls_without = sorted(set(timeline.sent) - {u.call_id for u, _ in collector.utterances.values()})
    hits = {svc: round(c.get("hit", 0) / max(1.0, c.get("hit", 0) + c.get("miss", 0)), 3) for svc, c in cache.items()}
    result = {
        "tag": tag,
        "calls": n,
        "pace": pace,
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "throughput_x": round(audio_s / wall, 3) if wall > 0 else None,
        "rtf": round(wall / audio_s, 4) if audio_s > 0 else None,
        "utterances": len(collector.utterances),
        "events": len(collector.events),
        "missing_events": missing,
        "calls_without_utterances": calls_without,
        "duplicate_events": collector.duplicates,
        "deadletters": [d.reason for d in collector.deadletters],
        "latency_s": {"overall": percentiles(overall), "stages": {s: percentiles(v) for s, v in stages.items()}},
        "latencies_s": [round(x, 3) for x in overall],
        "lag": lags,
        "lag_series": lag_series,
        "processes": processes,
        "cores_used": processes.get("total", {}).get("cores"),
        "triton": triton,
        "cache": cache,
        "cache_hit_ratio": hits,
        "started_at": round(t_start, 3),
    }
    log.info(
        "bench %s: %d utterances, %d events in %.1f s -> %.2fx realtime; latency p50 %.2f s p95 %.2f s",
        tag,
        result["utterances"],
        result["events"],
        wall,
        result["throughput_x"] or 0,
        result["latency_s"]["overall"].get("p50", float("nan")),
        result["latency_s"]["overall"].get("p95", float("nan")),
    )
    return result
