"""What the benchmark watches while the pipeline runs: every process's CPU and memory, the
services' Kafka consumer lag, and the services' own Prometheus metrics.

* :func:`stack_processes`: label -> pid for the stack's servers (Kafka, Redis, Triton and each
  Python-backend model instance it runs, Prometheus), the service processes and this process.
* :class:`ProcessSampler`: CPU seconds and RSS of each, sampled every ``interval_s`` (``/proc``).
* :class:`LagSampler`: per service, the messages between its group's committed offsets and the
  end of its input topics, every ``interval_s`` (the broker's view, as ``kafka-consumer-groups``).
* :func:`service_counters`: the services' ``/metrics`` scraped directly (the targets Prometheus
  discovers), summed over instances: exact counts at the moment of the call, no scrape delay.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local import process, stack
from deploy.local.services import ServiceProcesses
from shared.metrics import scrape_targets_dir
from shared.settings import Settings

log = logging.getLogger(__name__)

_STUB_MODEL = re.compile(r"/([^/]+)/\d+/model\.py$")


def stack_processes(settings: Settings, services: ServiceProcesses | None = None) -> dict[str, int]:
    """Label -> pid of every process the pipeline runs on: ``kafka``, ``redis``, ``triton``,
    ``triton:<model>#<i>`` (Python-backend stubs), ``prometheus``, ``<service>#<i>``, ``bench``."""
    out: dict[str, int] = {}
    for c in stack.status(settings).components:
        if c.pid is None:
            continue
        out[c.name] = c.pid
        if c.name == "triton":
            seen: dict[str, int] = defaultdict(int)
            for child in sorted(process.descendants(c.pid)):
                args = process.command_line(child)
                model = next((m.group(1) for a in args if (m := _STUB_MODEL.search(a))), None)
                if model:
                    out[f"triton:{model}#{seen[model]}"] = child
                    seen[model] += 1
    for p in services.processes if services else []:
        out[p.label] = p.proc.pid
    out["bench"] = os.getpid()
    return out


def role(label: str) -> str:
    """``asr_alignment#1`` -> ``asr_alignment``; ``triton:asr#0`` -> ``triton:asr``."""
    return label.split("#", 1)[0]


@dataclass
class _Track:
    cpu0: float
    cpu: float
    rss: list[float] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)


class ProcessSampler:
    """CPU, RSS and PSS of ``processes`` (label -> pid) between :meth:`start` and :meth:`stop`
    (:func:`deploy.local.process.memory_mb`: the PSS of a set of processes adds up to the memory
    they take, where their RSS counts each shared library once per process)."""

    def __init__(self, processes: Mapping[str, int], interval_s: float = 1.0):
        self.processes = dict(processes)
        self.interval_s = interval_s
        self._tracks: dict[str, _Track] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="process-sampler", daemon=True)
        self.wall_s = 0.0

    def start(self) -> ProcessSampler:
        for label, pid in self.processes.items():
            cpu = process.cpu_seconds(pid)
            if cpu is not None:
                self._tracks[label] = _Track(cpu, cpu)
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _sample(self) -> None:
        for label, track in self._tracks.items():
            pid = self.processes[label]
            cpu = process.cpu_seconds(pid)
            memory = process.memory_mb(pid)
            if cpu is not None:
                track.cpu = cpu
            if memory is not None:
                track.rss.append(memory["rss"])
                track.pss.append(memory["pss"])

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    @property
    def tracks(self) -> dict[str, _Track]:
        """Per label, its CPU and its RSS samples (one every ``interval_s``)."""
        return self._tracks

    def stop(self) -> dict[str, dict[str, float]]:
        """Per label: ``cpu_s`` used, ``cores`` (its average share of the machine's cores in use),
        ``rss_mb_peak``, ``rss_mb_mean`` and ``pss_mb_peak``; then ``total`` over all of them."""
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall_s = time.monotonic() - self._t0
        out: dict[str, dict[str, float]] = {}
        for label, t in self._tracks.items():
            cpu = max(0.0, t.cpu - t.cpu0)
            rss, pss = t.rss or [0.0], t.pss or [0.0]
            out[label] = {
                "cpu_s": round(cpu, 2),
                "cores": round(cpu / self.wall_s, 3) if self.wall_s else 0.0,
                "rss_mb_peak": round(max(rss), 1),
                "rss_mb_mean": round(sum(rss) / len(rss), 1),
                "pss_mb_peak": round(max(pss), 1),
            }
        total_cpu = sum(v["cpu_s"] for v in out.values())
        out["total"] = {
            "cpu_s": round(total_cpu, 2),
            "cores": round(total_cpu / self.wall_s, 3) if self.wall_s else 0.0,
            "rss_mb_peak": round(sum(v["rss_mb_peak"] for v in out.values()), 1),
            "rss_mb_mean": round(sum(v["rss_mb_mean"] for v in out.values()), 1),
            "pss_mb_peak": round(sum(v["pss_mb_peak"] for v in out.values()), 1),
        }
        return out


class LagSampler:
    """Consumer lag of each service's group over every partition of its input topics."""

    def __init__(self, settings: Settings, inputs: Mapping[str, tuple[str, list[str]]], interval_s: float = 2.0):
        """``inputs``: service -> (consumer group, input topics)."""
        from kafka import TopicPartition

        from shared.kafka_io import make_admin, make_consumer

        self.inputs = dict(inputs)
        self.interval_s = interval_s
        self._admin = make_admin(settings)
        self._consumer = make_consumer(settings, None, None)
        self._partitions = {
            service: [
                TopicPartition(t, p) for t in topics for p in sorted(self._consumer.partitions_for_topic(t) or [])
            ]
            for service, (_, topics) in self.inputs.items()
        }
        self.series: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lag-sampler", daemon=True)

    def lag(self) -> dict[str, int]:
        """Messages each service still has to consume and commit, now (a partition its group never
        committed counts from its start, where the group would begin)."""
        committed = self._admin.list_group_offsets({group: None for group, _ in self.inputs.values()})
        ends = self._consumer.end_offsets([tp for tps in self._partitions.values() for tp in tps])
        out = {}
        for service, (group, _) in self.inputs.items():
            done = committed.get(group, {})
            out[service] = sum(
                max(0, ends[tp] - max(0, done[tp].offset if tp in done else 0)) for tp in self._partitions[service]
            )
        return out

    def start(self) -> LagSampler:
        self.started_at = time.monotonic()
        """When sampling began (``time.monotonic()``): the clock of :attr:`series`."""
        self._thread.start()
        return self

    def latest(self, since: float) -> dict[str, int] | None:
        """The newest sample, if it was taken after ``since`` (``time.monotonic()``), else None."""
        if self.series and self.started_at + self.series[-1][0] >= since:
            return self.series[-1][1]
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                t = time.monotonic()
                self.series.append((round(t - self.started_at, 2), self.lag()))
            except Exception as exc:  # noqa: BLE001 - a lost sample is not worth failing the run
                log.debug("lag sample failed: %s", exc)
            self._stop.wait(self.interval_s)

    def stop(self) -> dict[str, dict[str, float]]:
        """Per service: ``max``, ``mean`` and ``final`` lag in messages over the samples."""
        self._stop.set()
        self._thread.join()
        out = {}
        for service in self.inputs:
            values = [lags.get(service, 0) for _, lags in self.series] or [0]
            out[service] = {"max": max(values), "mean": round(sum(values) / len(values), 1), "final": values[-1]}
        return out

    def close(self) -> None:
        self._admin.close()
        self._consumer.close()


def service_counters(settings: Settings, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``metric``'s samples from every running service instance's ``/metrics``, summed over the
    instances: labels (without ``instance_id``) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)
    for path in sorted(Path(scrape_targets_dir(settings)).glob("*.json")):
        try:
            [group] = json.loads(path.read_text())
            with urllib.request.urlopen(f"http://{group['targets'][0]}/metrics", timeout=5) as r:
                text = r.read().decode()
        except (OSError, ValueError) as exc:
            log.debug("no metrics from %s: %s", path.name, exc)
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == metric:
                    totals[tuple(sorted(sample.labels.items()))] += sample.value
    return dict(totals)
