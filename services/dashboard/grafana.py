"""The Grafana dashboard of the platform, built from code so that it stays in step with the page.

``emotion grafana`` rewrites ``deploy/grafana/emotion-dashboard.json``
(``--check`` only compares, exit 1 when it is stale; the unit tests do the same).  The panels
mirror the dashboard page over the Prometheus datasource: throughput, audio, lag, stage latency,
batch sizes, errors and dead letters, cache hit ratio, the ASR's audio chunks and utterances,
utterances pending in the joins, and the emotion panels over the fusion service's
``emotion_events_total`` and ``emotion_event_latency_seconds``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.escalation import NEGATIVE_LABELS
from shared.settings import EMOTIONS, PROJECT_ROOT, Settings

from .promql import exact_increase
from .server import EMOTION_COLOURS

DASHBOARD_PATH = PROJECT_ROOT / "deploy" / "grafana" / "emotion-dashboard.json"
DATASOURCE_UID = "emotion-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
SVC = 'service=~"$service"'
RI = "$__rate_interval"
NEG = "|".join(sorted(NEGATIVE_LABELS))


class _Layout:
    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel = {"id": self._id(), **panel, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def _target(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> dict:
    t = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend, "range": not instant, "instant": instant}
    return t


def timeseries(
    title: str,
    targets: list[dict],
    unit: str = "short",
    description: str = "",
    stack: bool = False,
    overrides: list | None = None,
    min_zero: bool = True,
) -> dict:
    custom = {
        "drawStyle": "line",
        "lineWidth": 2,
        "fillOpacity": 12 if stack else 8,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "gradientMode": "opacity",
        "axisSoftMin": 0 if min_zero else None,
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "color": {"mode": "palette-classic"}, "custom": custom},
            "overrides": overrides or [],
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "calcs": ["lastNotNull", "max"],
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    expr: str,
    unit: str = "short",
    description: str = "",
    thresholds: list | None = None,
    decimals: int | None = None,
) -> dict:
    steps = thresholds or [{"color": "green", "value": None}]
    defaults: dict = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": steps},
        "noValue": "no data yet",
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [_target(expr, legend="", instant=True)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        },
    }


def _emotion_overrides() -> list[dict]:
    return [
        {
            "matcher": {"id": "byName", "options": label},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": EMOTION_COLOURS[label]}}],
        }
        for label in EMOTIONS
    ]


def build_dashboard() -> dict:
    g = _Layout()
    g.row("Overview")
    g.add(
        stat(
            "Services up",
            f"sum(emotion_service_up{{{SVC}}})",
            description="Service loops running (emotion_service_up)",
            thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
        ),
        4,
        4,
    )
    g.add(
        stat(
            "Messages / s",
            f"sum(rate(emotion_messages_total{{{SVC}}}[{RI}]))",
            unit="reqps",
            description="Input messages per second, all selected services",
        ),
        4,
        4,
    )
    g.add(
        stat(
            "Audio seconds / s",
            f"sum(rate(emotion_audio_seconds_total{{{SVC}}}[{RI}]))",
            unit="short",
            decimals=2,
            description="Seconds of audio processed per wall-clock second (x real time)",
        ),
        4,
        4,
    )
    g.add(
        stat(
            "Consumer lag",
            f"sum(emotion_consumer_lag{{{SVC}}})",
            description="Messages behind the end of the inputs",
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 100},
                {"color": "red", "value": 1000},
            ],
        ),
        4,
        4,
    )
    g.add(
        stat(
            "Dead letters (range)",
            f"sum(increase(emotion_deadletters_total{{{SVC}}}[$__range]))",
            decimals=0,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        4,
        4,
    )
    g.add(
        stat(
            "Event latency p95",
            "histogram_quantile(0.95, sum by (le) (rate(emotion_event_latency_seconds_bucket[5m])))",
            unit="s",
            description="From the utterance message to its emotion event (emotion_event_latency_seconds, "
            "exported by moe_fusion)",
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 2},
                {"color": "red", "value": 5},
            ],
        ),
        4,
        4,
    )

    g.row("Throughput")
    g.add(
        timeseries(
            "Messages / s by service",
            [
                _target(f"sum by (service) (rate(emotion_messages_total{{{SVC}}}[{RI}]))", "{{service}}"),
                _target(
                    f'sum by (service) (rate(emotion_messages_total{{{SVC}, outcome="deadletter"}}[{RI}]))',
                    "{{service}} dead-lettered",
                    "B",
                ),
            ],
            unit="reqps",
        ),
        12,
        8,
    )
    g.add(
        timeseries(
            "Audio seconds / s by service",
            [
                _target(f"sum by (service) (rate(emotion_audio_seconds_total{{{SVC}}}[{RI}]))", "{{service}}"),
            ],
            unit="short",
        ),
        6,
        8,
    )
    g.add(
        timeseries(
            "Produced / s by topic",
            [
                _target(f"sum by (topic) (rate(emotion_produced_total{{{SVC}}}[{RI}]))", "{{topic}}"),
            ],
            unit="reqps",
        ),
        6,
        8,
    )

    g.row("ASR alignment")
    g.add(
        timeseries(
            "Audio chunks / s by outcome",
            [
                _target(f"sum by (outcome) (rate(emotion_audio_chunks_total{{{SVC}}}[{RI}]))", "{{outcome}}"),
            ],
            unit="reqps",
            description="Audio chunks taken in (ok) or skipped: duplicate, gap, rejected",
        ),
        12,
        7,
    )
    g.add(
        timeseries(
            "Utterances / min by speaker and transcript",
            [
                _target(
                    f"sum by (speaker, transcript) (rate(emotion_utterances_total{{{SVC}}}[{RI}])) * 60",
                    "{{speaker}} {{transcript}}",
                ),
            ],
            unit="short",
            description="Utterances segmented: with text, empty, or dropped as an ASR hallucination",
        ),
        12,
        7,
    )
    g.add(
        timeseries(
            "Utterances per Whisper window",
            [
                _target(
                    f"sum(rate(emotion_asr_window_utterances_sum{{{SVC}}}[{RI}])) / sum(rate(emotion_asr_window_utterances_count{{{SVC}}}[{RI}]))",
                    "mean",
                ),
                _target(
                    f"histogram_quantile(0.95, sum by (le) (rate(emotion_asr_window_utterances_bucket{{{SVC}}}[{RI}])))",
                    "p95",
                    "B",
                ),
            ],
            unit="short",
            description="How many utterances shared each transcribed utterance's Whisper window "
            "(EMOTION_MODELS__ASR_PACKING; 1 without packing or at low load)",
        ),
        12,
        7,
    )

    g.row("Backlog and latency")
    g.add(
        timeseries(
            "Consumer lag by topic",
            [
                _target(f"sum by (service, topic) (emotion_consumer_lag{{{SVC}}})", "{{topic}} → {{service}}"),
                _target(f"sum by (service) (emotion_join_pending{{{SVC}}})", "{{service}} join pending", "B"),
            ],
            unit="short",
            description="Messages behind the end of each input topic; and utterances waiting in the joins "
            "of graph_gat and moe_fusion for their other inputs (emotion_join_pending)",
        ),
        8,
        8,
    )
    g.add(
        timeseries(
            "Stage latency p95",
            [
                _target(
                    f"histogram_quantile(0.95, sum by (service, stage, le) (rate(emotion_stage_seconds_bucket{{{SVC}}}[{RI}])))",
                    "{{service}} {{stage}}",
                ),
            ],
            unit="s",
            description="Per batch, per stage of the service loop (decode, process, produce, commit, total)",
        ),
        8,
        8,
    )
    g.add(
        timeseries(
            "Stage latency p50",
            [
                _target(
                    f"histogram_quantile(0.5, sum by (service, stage, le) (rate(emotion_stage_seconds_bucket{{{SVC}}}[{RI}])))",
                    "{{service}} {{stage}}",
                ),
            ],
            unit="s",
        ),
        8,
        8,
    )

    g.row("Batches and failures")
    g.add(
        timeseries(
            "Batch size",
            [
                _target(
                    f"sum by (service) (rate(emotion_batch_size_sum{{{SVC}}}[{RI}])) / sum by (service) (rate(emotion_batch_size_count{{{SVC}}}[{RI}]))",
                    "{{service}} mean",
                ),
                _target(
                    f"histogram_quantile(0.95, sum by (service, le) (rate(emotion_batch_size_bucket{{{SVC}}}[{RI}])))",
                    "{{service}} p95",
                    "B",
                ),
            ],
            unit="short",
        ),
        6,
        8,
    )
    g.add(
        timeseries(
            "Errors / s by kind",
            [
                _target(f"sum by (service, kind) (rate(emotion_errors_total{{{SVC}}}[{RI}]))", "{{service}} {{kind}}"),
                _target(
                    f"sum by (service, role) (rate(emotion_kafka_calls_bounded_total{{{SVC}}}[{RI}]))",
                    "{{service}} kafka {{role}} call bounded",
                    "B",
                ),
            ],
            unit="reqps",
            description="Failed batches (retried): Triton or Kafka unavailable, ...; and Kafka client calls "
            "failed by their bound (no answer within their own timeout plus kafka.call_grace_s)",
        ),
        6,
        8,
    )
    g.add(
        timeseries(
            "Dead letters / s by error type",
            [
                _target(
                    f"sum by (service, error_type) (rate(emotion_deadletters_total{{{SVC}}}[{RI}]))",
                    "{{service}} {{error_type}}",
                ),
            ],
            unit="reqps",
        ),
        6,
        8,
    )
    g.add(
        timeseries(
            "Feature cache hit ratio",
            [
                _target(
                    f'sum by (service) (rate(emotion_cache_requests_total{{{SVC}, result="hit"}}[{RI}])) '
                    f"/ sum by (service) (rate(emotion_cache_requests_total{{{SVC}}}[{RI}]))",
                    "{{service}}",
                ),
            ],
            unit="percentunit",
        ),
        6,
        8,
    )

    g.row("Emotions")
    g.add(
        {
            "type": "bargauge",
            "title": "Emotion mix (time range)",
            "datasource": DS,
            "description": "Emotion events per label over the dashboard's time range (emotion_events_total, exported by moe_fusion)",
            "targets": [
                _target(
                    f"sum by (label) ({exact_increase('emotion_events_total', '$__range')})", "{{label}}", instant=True
                )
            ],
            "fieldConfig": {
                "defaults": {
                    "unit": "short",
                    "decimals": 0,
                    "min": 0,
                    "color": {"mode": "fixed", "fixedColor": "#8b95a5"},
                    "noValue": "no data yet",
                },
                "overrides": _emotion_overrides(),
            },
            "options": {
                "orientation": "horizontal",
                "displayMode": "gradient",
                "showUnfilled": True,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        },
        8,
        9,
    )
    g.add(
        timeseries(
            "Emotions / min by label",
            [
                _target("sum by (label) (rate(emotion_events_total[$__rate_interval])) * 60", "{{label}}"),
            ],
            unit="short",
            stack=True,
            overrides=_emotion_overrides(),
        ),
        10,
        9,
    )
    g.add(
        stat(
            "Customer negative share (5 min)",
            f'sum(rate(emotion_events_total{{speaker="customer", label=~"{NEG}"}}[5m]) '
            'or 0 * rate(emotion_events_total{speaker="customer"}[5m])) '
            '/ sum(rate(emotion_events_total{speaker="customer"}[5m]))',
            unit="percentunit",
            description="Share of customer utterances labelled " + ", ".join(sorted(NEGATIVE_LABELS)),
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 0.3},
                {"color": "red", "value": 0.5},
            ],
        ),
        6,
        9,
    )
    g.add(
        timeseries(
            "Emotion event latency",
            [
                _target(
                    "histogram_quantile(0.5, sum by (le) (rate(emotion_event_latency_seconds_bucket[$__rate_interval])))",
                    "p50",
                ),
                _target(
                    "histogram_quantile(0.95, sum by (le) (rate(emotion_event_latency_seconds_bucket[$__rate_interval])))",
                    "p95",
                    "B",
                ),
            ],
            unit="s",
        ),
        24,
        7,
    )

    return {
        "uid": "emotion-stream",
        "title": "Emotion stream — operations",
        "description": "Streaming multimodal emotion recognition: services, Kafka backlog, latency, failures and emotions",
        "tags": ["emotion", "kafka", "triton"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {"refresh_intervals": ["2s", "5s", "10s", "30s", "1m", "5m"]},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "hide": 0,
                    "current": {"selected": False, "text": "Emotion Prometheus", "value": DATASOURCE_UID},
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                    "skipUrlSync": False,
                },
                {
                    "name": "service",
                    "label": "Service",
                    "type": "query",
                    "datasource": DS,
                    "definition": "label_values(emotion_service_up, service)",
                    "query": {
                        "query": "label_values(emotion_service_up, service)",
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                        "qryType": 1,
                    },
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                    "regex": "",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "options": [],
                    "skipUrlSync": False,
                },
            ]
        },
        "panels": g.panels,
    }


def render() -> str:
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write the Grafana dashboard of the platform (deploy/grafana/emotion-dashboard.json) from the code that "
        "also draws the dashboard page, so the two show the same panels over the same Prometheus series."
    )
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the JSON differs from the code")
    parser.add_argument("--output", type=Path, default=DASHBOARD_PATH, help="default: %(default)s")


def main(args: argparse.Namespace, settings: Settings) -> int:
    text = render()
    if args.check:
        same = args.output.exists() and args.output.read_text() == text
        print(f"{args.output}: {'up to date' if same else 'stale: run emotion grafana'}")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(args.output)
    return 0
