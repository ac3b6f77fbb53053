"""Prometheus metrics of the streaming services (one registry per service instance).

Names are shared by every service and told apart by the ``service`` label, so one dashboard
panel shows all five stages.  Outside Kubernetes (where Prometheus finds the pods itself), an
instance announces its ``/metrics`` endpoint through Prometheus's file-based discovery:
:class:`FileScrapeTargets` writes one target file per instance into :func:`scrape_targets_dir`,
the folder the local stack's Prometheus reads (``file_sd_configs``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from shared.files import write_text_atomic
from shared.settings import Settings

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_WINDOW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)


class ServiceMetrics:
    def __init__(self, service: str):
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "emotion_messages_total",
            "Input messages by outcome (ok, deadletter)",
            ["service", "topic", "outcome"],
            registry=r,
        )
        self.produced = Counter("emotion_produced_total", "Output messages by topic", ["service", "topic"], registry=r)
        self.batch_size = Histogram(
            "emotion_batch_size", "Messages per processed batch", ["service"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "emotion_stage_seconds",
            "Time per batch in each stage of the service loop",
            ["service", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "emotion_errors_total", "Failures by kind (retried unless dead-lettered)", ["service", "kind"], registry=r
        )
        self.deadletters = Counter(
            "emotion_deadletters_total", "Messages sent to the dead-letter topic", ["service", "error_type"], registry=r
        )
        self.kafka_calls_bounded = Counter(
            "emotion_kafka_calls_bounded",
            "Kafka client calls failed by their bound (no answer within their own timeout "
            "plus kafka.call_grace_s), by client role",
            ["service", "role"],
            registry=r,
        )
        self.cache = Counter(
            "emotion_cache_requests_total", "Feature cache look-ups", ["service", "result"], registry=r
        )
        self.lag = Gauge(
            "emotion_consumer_lag",
            "Messages behind the end of each input partition",
            ["service", "topic", "partition"],
            registry=r,
        )
        self.audio_seconds = Counter(
            "emotion_audio_seconds_total", "Seconds of audio processed", ["service"], registry=r
        )
        self.up = Gauge("emotion_service_up", "1 while the service loop runs", ["service"], registry=r)
        # joins (graph_gat, moe_fusion) and emotion events (moe_fusion)
        self.join_pending = Gauge(
            "emotion_join_pending", "Utterances waiting for a missing input of the join", ["service"], registry=r
        )
        self.events = Counter(
            "emotion_events_total",
            "Emotion events produced, by label and speaker",
            ["service", "label", "speaker"],
            registry=r,
        )
        self.event_latency = Histogram(
            "emotion_event_latency_seconds",
            "From the utterance message to its emotion event",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        # the ASR alignment service
        self.audio_chunks = Counter(
            "emotion_audio_chunks_total",
            "Audio chunks by outcome (ok, duplicate, gap, rejected)",
            ["service", "outcome"],
            registry=r,
        )
        self.utterances = Counter(
            "emotion_utterances_total",
            "Utterances segmented, by speaker and transcript (text, empty, hallucination)",
            ["service", "speaker", "transcript"],
            registry=r,
        )
        self.asr_window = Histogram(
            "emotion_asr_window_utterances",
            "Utterances that shared each transcribed utterance's Whisper window (packing; 1: alone)",
            ["service"],
            buckets=_WINDOW_BUCKETS,
            registry=r,
        )

    def serve(self, host: str, port: int) -> int:
        """Expose ``/metrics``; returns the bound port (``port=0`` picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server.server_address[1]


def scrape_targets_dir(settings: Settings) -> Path:
    """Folder of the ``file_sd_configs`` target files of this stack."""
    return settings.run_dir / "prometheus" / "targets"


class FileScrapeTargets:
    """:class:`shared.runtime.ScrapeTargets` by Prometheus's file-based discovery: one JSON target
    file per instance in :func:`scrape_targets_dir`, picked up within the discovery's refresh
    interval whether Prometheus runs yet or not."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def register(self, service: str, instance_id: str, port: int, host: str | None = None) -> Path:
        """Make Prometheus scrape ``host:port`` (``/metrics``) as ``service`` / ``instance_id``;
        returns the target file for :meth:`unregister`."""
        addr = host or self.settings.runtime.metrics_host
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{service}-{instance_id}")
        path = scrape_targets_dir(self.settings) / f"{safe}.json"
        body = [{"targets": [f"{addr}:{port}"], "labels": {"service": service, "instance_id": instance_id}}]
        write_text_atomic(path, json.dumps(body, indent=2) + "\n")
        return path

    def unregister(self, target: Path) -> None:
        """Remove a target file :meth:`register` wrote (missing is fine)."""
        Path(target).unlink(missing_ok=True)
