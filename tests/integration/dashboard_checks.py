"""The dashboard against a live pipeline: :func:`check_live_dashboard`.

Meant to be called by an end-to-end test while the real services (``emotion serve NAME``) are still
running, right after it streamed calls through them: it starts the dashboard on the same stack,
loads the page in headless Chromium and checks, from the DOM and a screenshot, that every panel
shows that live data, then runs the Grafana dashboard's expressions on the same Prometheus.

Rates on the page are over a 30 s window (:data:`services.dashboard.promql.RATE`), so about 30 s
after the last message a service's current throughput is back to 0; the page still draws the last
5 minutes, and each line chart's legend carries the peak of what it drew (``data-max``), which is
what is checked.  Stage latency and batch sizes are over 5 minutes too: call this within about
4 minutes of the services' last batch.  The emotion mix window (5 minutes by default) is widened
to cover the oldest event, on the page and in ``emotion_events_total``'s query alike.
"""

from __future__ import annotations

import collections
import math
import time
import urllib.parse
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from services.dashboard import grafana
from services.dashboard.promql import emotion_mix_query, metric_names
from services.dashboard.server import CALLS_SHOWN, EMOTION_COLOURS, TIMELINE_SPAN_S, DashboardServer
from services.escalation import detect_escalation
from shared.contracts import ContractError, EmotionEvent, decode
from shared.settings import Settings
from deploy.local.process import free_port
from tests.integration.browser import Dom, check_screenshot, get_json, hex_rgb, run_browser, wait_for

AUDIO_SERVICE = "asr_alignment"
"""The service that reports seconds of audio processed."""
FUSION_SERVICE = "moe_fusion"
"""The service that produces the emotion events and counts them (``emotion_events_total``)."""
JOIN_SERVICES = ("graph_gat", "moe_fusion")
"""The services that join several inputs per utterance (``emotion_join_pending``)."""
GRAFANA_VARIABLES = {"$service": ".*", "$__rate_interval": "1m", "$__range": "5m"}
"""What Grafana would put in the expressions: every service, a 1 min rate window, a 5 min range."""
FUSION_METRICS = {"emotion_events_total", "emotion_event_latency_seconds_bucket"}
"""What moe_fusion exports about the emotion events."""
MUST_ANSWER = {"emotion_messages_total", "emotion_audio_seconds_total", "emotion_produced_total", *FUSION_METRICS}
"""Metrics whose Grafana expressions must return series: throughput and emotions."""


def check_live_dashboard(
    settings: Settings,
    events: Sequence[EmotionEvent],
    services: Sequence[str],
    tmp_path: Path,
    timeout_s: float = 120.0,
) -> dict:
    """Check the dashboard on the live stack of ``settings`` against what the pipeline did.

    ``events`` are the emotion events the pipeline produced (duplicates allowed: the dashboard keeps
    the last per utterance id); ``services`` the names of the services that ran.  Fails the test
    (``pytest.fail`` or ``AssertionError``) unless:

    * the ``emotions`` topic holds every event, and no other event produced since the first of them
      (the dashboard re-reads the topic from there: any other call there would be on the page too);
    * within ``timeout_s`` the dashboard has read them all and Prometheus has every service's
      throughput, lag, stage latency and batch size (plus ``asr_alignment``'s audio seconds and
      ``moe_fusion``'s event counts, which must equal the events' labels);
    * the page, rendered by Chromium, shows: every service in the throughput legend with a peak
      rate > 0 over the drawn 5 minutes; ``asr_alignment``'s audio seconds likewise; every service in
      the lag, latency and batch panels; errors and dead letters rendered ("none" counts); the
      joins' pending utterances; the end-to-end event latency; the emotion mix from the events,
      equal to the events' label counts and to ``emotion_events_total``; exactly the events' calls in
      the timelines (the first :data:`CALLS_SHOWN` when there are more), each with its labels and
      speakers in time order, its utterance blocks, and the escalation of
      :func:`services.escalation.detect_escalation` (flagged, ongoing or past; the header's counts);
    * its screenshot is a drawn page showing the colours of the commonest labels;
    * every Grafana panel expression runs on this Prometheus (through the dashboard's proxy), and
      those over throughput and emotion metrics return series.

    Returns figures: seconds until the dashboard had the events (``events_s``), until Prometheus had
    every series (``prometheus_s``), to render the page (``page_s``) and the screenshot
    (``screenshot_s``), seconds from the newest event to the DOM dump (``since_last_event_s``), the
    throughput now and at its peak per service (messages/s), the audio peak, the mix, the calls and
    escalated calls shown, error and dead-letter totals, the event latency p95, the series each
    Grafana target returned, and the paths of the DOM dump and screenshot.
    """
    assert events, "no emotion events to look for"
    assert services, "no services named"
    started = time.monotonic()
    latest = {e.utterance_id: e for e in events}
    labels = collections.Counter(e.label for e in latest.values())
    by_call: dict[str, list[EmotionEvent]] = collections.defaultdict(list)
    for e in latest.values():
        by_call[e.call_id].append(e)
    for call in by_call.values():
        call.sort(key=lambda e: (e.start, e.end, e.utterance_id))
    since, backlog = _start(settings, set(latest))
    # the mix counts events created in its window: make it cover the oldest event until the end
    mix_window_s = max(300.0, time.time() - min(e.created_at for e in latest.values()) + 2 * timeout_s + 120)
    figures: dict = {
        "backlog": backlog,
        "events": len(latest),
        "services": sorted(services),
        "mix_window_s": round(mix_window_s),
    }

    per_call = max(100, *(len(c) for c in by_call.values()))
    server = DashboardServer(
        settings,
        "127.0.0.1",
        free_port(),
        backlog=backlog,
        since=since,
        per_call=per_call,
        mix_window_s=mix_window_s,
        active_window_s=max(600.0, mix_window_s),
    )
    server.start()
    try:
        url = server.url
        wait_for(
            "the dashboard to read the pipeline's events from Kafka", lambda: set(latest) <= _stored_ids(url), timeout_s
        )
        figures["events_s"] = round(time.monotonic() - started, 1)
        wait_for(
            "Prometheus to have the services' series",
            lambda: _prometheus_ready(url, services, labels, mix_window_s),
            timeout_s,
        )
        figures["prometheus_s"] = round(time.monotonic() - started, 1)

        t = time.monotonic()
        done = run_browser(url + "/", "--dump-dom")
        figures["since_last_event_s"] = round(time.time() - max(e.created_at for e in latest.values()), 1)
        figures["page_s"] = round(time.monotonic() - t, 1)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        html = done.stdout.decode()
        figures["dom"] = tmp_path / "dashboard-live.html"
        figures["dom"].write_text(html)
        dom = Dom(html)
        assert dom.by_id.get("chart-throughput", {}).get("data-state") == "ok", f"page did not render: {html[:3000]}"
        figures |= _check_metric_panels(dom, services)
        figures |= _check_emotion_panels(dom, services, labels, by_call, settings.events.negative_labels)

        shot = tmp_path / "dashboard-live.png"
        t = time.monotonic()
        done = run_browser(url + "/", f"--screenshot={shot}")
        figures["screenshot_s"] = round(time.monotonic() - t, 1)
        assert done.returncode == 0 and shot.exists(), done.stderr.decode()[-2000:]
        commonest = labels.most_common(1)[0][1]
        drawn = [label for label, n in labels.items() if 5 * n >= commonest and label in EMOTION_COLOURS]
        colours = {label: hex_rgb(EMOTION_COLOURS[label]) for label in drawn}
        figures["screenshot_pixels"] = check_screenshot(shot, colours)
        figures["screenshot"] = shot

        figures["grafana"] = _check_grafana(url, services, latest.values())
    finally:
        server.stop()
    figures["total_s"] = round(time.monotonic() - started, 1)
    return figures


# ---- before the page ----------------------------------------------------------------------------
def _start(settings: Settings, ids: set[str]) -> tuple[float, int]:
    """Where the dashboard must start reading the emotions topic to see every event of ``ids`` and
    no other: the Kafka timestamp of the first of them (``since``) and the records from there to the
    end of the longest partition (``backlog``).  Fails when an event is not on the topic, or when
    another event was produced since then (the page would show its call too)."""
    from kafka import TopicPartition

    from shared.kafka_io import make_consumer

    topic = settings.topics.emotions
    consumer = make_consumer(settings, None, None)
    records: list[tuple[TopicPartition, int, int, str | None, str | None]] = []  # tp, offset, ms, utterance, call
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert parts, f"topic {topic!r} does not exist"
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records += [(tp, r.offset, r.timestamp, *_ids_of(r.value)) for r in batch]
    finally:
        consumer.close(autocommit=False)
    ours = [r for r in records if r[3] in ids]
    missing = ids - {r[3] for r in ours}
    assert not missing, f"{len(missing)} of the pipeline's events are not on the {topic} topic: {sorted(missing)[:5]}"
    since_ms = min(r[2] for r in ours)
    others = {r[4] for r in records if r[2] >= since_ms and r[3] is not None and r[3] not in ids}
    assert not others, (
        f"the {topic} topic holds events of other calls produced among the pipeline's "
        f"({sorted(others)[:5]}): the page would show them too; give the pipeline a topic of its own"
    )
    first = {tp: min(r[1] for r in records if r[0] == tp and r[2] >= since_ms) for tp in {r[0] for r in ours}}
    return since_ms / 1000, max(ends[tp] - offset for tp, offset in first.items())


def _ids_of(raw: bytes | None) -> tuple[str | None, str | None]:
    """(utterance id, call id) of an emotion event record; (None, None) for one the dashboard skips."""
    try:
        e = decode(raw, EmotionEvent)
    except ContractError:
        return None, None
    return e.utterance_id, e.call_id


def _stored_ids(url: str) -> set[str]:
    snap = get_json(f"{url}/api/calls?max_calls=200&span=86400")
    return {u["utterance_id"] for c in snap["calls"] for u in c["utterances"]}


def _query(url: str, name: str) -> list[dict]:
    return get_json(f"{url}/api/query?q={name}")["data"]["result"]


def _finite(value: str) -> bool:
    return math.isfinite(float(value))


def _prometheus_ready(url: str, services: Sequence[str], labels: collections.Counter, mix_window_s: float) -> bool:
    """True once the panels' queries have every service; raises with what is missing otherwise."""
    missing = []
    for name in ("throughput", "lag_by_service", "stage_p95", "batch_mean"):
        have = {r["metric"].get("service") for r in _query(url, name) if _finite(r["value"][1])}
        missing += [f"{name}: {s}" for s in services if s not in have]
    if AUDIO_SERVICE in services and not any(r["metric"].get("service") == AUDIO_SERVICE for r in _query(url, "audio")):
        missing.append(f"audio: {AUDIO_SERVICE}")
    if FUSION_SERVICE in services:
        query = urllib.parse.urlencode({"query": emotion_mix_query(mix_window_s)})
        result = get_json(f"{url}/api/query?{query}")["data"]["result"]
        mix = {r["metric"]["label"]: round(float(r["value"][1])) for r in result}
        if {k: v for k, v in mix.items() if v} != dict(labels):
            missing.append(f"emotion_events_total {mix} != the events' labels {dict(labels)}")
    if missing:
        raise AssertionError("; ".join(missing))
    return True


# ---- the page -----------------------------------------------------------------------------------
def _check_metric_panels(dom: Dom, services: Sequence[str]) -> dict:
    ids = dom.by_id
    legend = {e["data-series"]: e for e in dom.within("legend-item", "chart-throughput")}
    assert set(services) <= set(legend), f"throughput legend {sorted(legend)} lacks some of {sorted(services)}"
    peak = {s: float(legend[s]["data-max"] or 0) for s in services}
    assert all(v > 0 for v in peak.values()), f"a service's throughput never rose above 0 on the chart: {peak}"
    now = {s: float(legend[s]["data-value"] or 0) for s in services}
    out: dict = {"throughput_now": now, "throughput_peak": peak}
    if AUDIO_SERVICE in services:
        audio = {e["data-series"]: e for e in dom.within("legend-item", "chart-audio")}
        assert AUDIO_SERVICE in audio, f"no {AUDIO_SERVICE} in the audio chart: {sorted(audio)}"
        out["audio_peak"] = float(audio[AUDIO_SERVICE]["data-max"] or 0)
        assert out["audio_peak"] > 0, f"{AUDIO_SERVICE}'s audio seconds never rose above 0 on the chart"

    for chart in ("chart-lag", "chart-latency", "chart-batch"):
        assert ids[chart]["data-state"] == "ok", (chart, ids[chart])
    lagging = {r["data-service"] for r in dom.within("bar-row", "chart-lag")}
    batched = {r["data-key"] for r in dom.within("bar-row", "chart-batch")}
    timed = set(ids["chart-latency"]["data-services"].split(","))
    for panel, have in (("lag", lagging), ("latency", timed), ("batch size", batched)):
        assert set(services) <= have, f"the {panel} panel lacks {sorted(set(services) - have)}"
    for chart in ("chart-errors", "chart-deadletters"):  # "zero": the panel says none (a clean run)
        assert ids[chart]["data-state"] in ("ok", "zero"), (chart, ids[chart])
    out["errors"] = float(ids["chart-errors"]["data-total"])
    out["deadletters"] = float(ids["chart-deadletters"]["data-total"])
    joins = [s for s in JOIN_SERVICES if s in services]
    if joins:
        pending = {e["data-service"]: float(e["data-value"]) for e in dom.within("join")}
        assert set(joins) <= set(pending), f"join pending lacks {sorted(set(joins) - set(pending))}: {pending}"
        out["join_pending"] = pending
    assert ids["status-prometheus"]["data-state"] == "ok" and ids["status-events"]["data-state"] == "ok"
    assert int(ids["status-services"]["data-value"]) >= len(services), ids["status-services"]
    return out


def _check_emotion_panels(
    dom: Dom,
    services: Sequence[str],
    labels: collections.Counter,
    by_call: dict[str, list[EmotionEvent]],
    negative: Collection[str],
) -> dict:
    ids = dom.by_id
    out: dict = {}
    # the emotion mix: read from the topic, equal to the events' labels and to emotion_events_total
    mix_node = ids["chart-emotion-mix"]
    rows = dom.within("bar-row", "chart-emotion-mix")
    mix = {r["data-label"]: int(r["data-count"]) for r in rows if int(r["data-count"])}
    assert mix_node["data-source"] == "events", mix_node
    assert mix == dict(labels), f"emotion mix {mix} != the events' labels {dict(labels)}"
    assert int(mix_node["data-total"]) == sum(labels.values())
    out["mix"] = mix
    if FUSION_SERVICE in services:
        metric = {r["data-label"]: int(r["data-metric-count"]) for r in rows if r["data-metric-count"] not in ("", "0")}
        assert metric == mix, f"emotion_events_total on the page {metric} != the mix from the topic {mix}"
        assert ids["mix-check"]["data-state"] == "ok", ids["mix-check"]
        kpi = ids["kpi-e2e"]
        assert kpi["data-value"] and float(kpi["data-value"]) > 0, f"no end-to-end event latency: {kpi}"
        out["event_latency_p95_s"] = float(kpi["data-value"])

    # the timelines: exactly the events' calls, labels and speakers in time order
    timeline = ids["chart-timelines"]
    assert timeline["data-state"] == "ok", timeline
    shown = timeline["data-calls"].split(",")
    if len(by_call) <= CALLS_SHOWN:
        assert set(shown) == set(by_call), f"timelines show {sorted(shown)}, the events' calls are {sorted(by_call)}"
    else:
        assert len(shown) == CALLS_SHOWN and set(shown) <= set(by_call), shown
    rows_by_call = {r["data-call-id"]: r for r in dom.within("call-row")}
    escalated = []
    for call_id in shown:
        events = _drawn(by_call[call_id])
        row = rows_by_call[call_id]
        assert row["data-labels"].split(",") == [e.label for e in events], (call_id, row["data-labels"])
        assert row["data-speakers"].split(",") == [e.speaker for e in events], (call_id, row["data-speakers"])
        blocks = sorted(
            (b["data-utterance-id"], b["data-label"])
            for b in dom.within("utt", "chart-timelines")
            if b["_call"] == call_id
        )
        assert blocks == sorted((e.utterance_id, e.label) for e in events), call_id
        esc = detect_escalation(by_call[call_id], negative=negative)
        assert row["data-escalated"] == str(esc is not None).lower(), (call_id, row["data-escalated"])
        state = "" if esc is None else "ongoing" if esc.ongoing else "past"
        assert row["data-escalation"] == state, (call_id, row["data-escalation"], esc)
        if esc is not None:
            escalated.append(call_id)
    if len(by_call) <= CALLS_SHOWN:  # the header counts every active call: here, the shown ones
        ongoing = sum(rows_by_call[c]["data-escalation"] == "ongoing" for c in escalated)
        assert ids["status-escalations"]["data-value"] == str(len(escalated)), ids["status-escalations"]
        assert ids["status-escalations"]["data-ongoing"] == str(ongoing), ids["status-escalations"]
    out["calls"] = shown
    out["escalated"] = escalated
    return out


def _drawn(events: list[EmotionEvent]) -> list[EmotionEvent]:
    """The utterances of a call its timeline draws: those ending in its last TIMELINE_SPAN_S seconds."""
    t0 = max(0.0, max(e.end for e in events) - TIMELINE_SPAN_S)
    return [e for e in events if e.end >= t0]


# ---- Grafana ------------------------------------------------------------------------------------
def _check_grafana(url: str, services: Sequence[str], events: Iterable[EmotionEvent]) -> dict[str, int]:
    """Run every target of the Grafana dashboard through the proxy; returns series per ``title [ref]``."""
    customers = any(e.speaker == "customer" for e in events)
    answered, empty = {}, []
    for title, ref, expr in _grafana_targets(grafana.build_dashboard()["panels"]):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        body = get_json(f"{url}/api/query?" + urllib.parse.urlencode({"query": expr}))
        assert body["status"] == "success", (title, expr, body)
        key = f"{title} [{ref}]"
        answered[key] = len(body["data"]["result"])
        names = metric_names(expr)
        must = (
            names & MUST_ANSWER
            and 'outcome="deadletter"' not in expr
            and (AUDIO_SERVICE in services or "emotion_audio_seconds_total" not in names)
            and (FUSION_SERVICE in services or not names & FUSION_METRICS)
            and (customers or 'speaker="customer"' not in expr)
        )
        if must and not answered[key]:
            empty.append(key)
    assert not empty, f"Grafana panels without data on the live Prometheus: {empty}"
    return answered


def _grafana_targets(panels: list[dict]) -> Iterable[tuple[str, str, str]]:
    for p in panels:
        yield from _grafana_targets(p.get("panels", []))
        yield from ((p["title"], t["refId"], t["expr"]) for t in p.get("targets", []))
