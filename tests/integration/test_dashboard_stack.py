"""The dashboard on the real stack: synthetic services scraped by Prometheus, scripted emotion
events on Kafka, the page rendered by headless Chromium and read back from its DOM and a
screenshot."""

from __future__ import annotations

import collections
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from services.dashboard.server import EMOTION_COLOURS, DashboardServer
from services.dashboard.synthetic import CALM, ESCALATING, SyntheticServices, scripted_call
from deploy.local.process import free_port
from shared.metrics import FileScrapeTargets
from tests.integration.browser import Dom, check_screenshot, get_json, hex_rgb, run_browser, scraped, wait_for

pytestmark = pytest.mark.integration

SERVICES = ("asr_alignment", "text_encoder", "moe_fusion")


@pytest.fixture(scope="module")
def traffic(stack_settings):
    """Three fake services scraped by Prometheus, the dashboard reading from the end of the topic,
    then two scripted calls produced to the emotions topic (and counted by the fake moe_fusion)."""
    s = stack_settings
    services = SyntheticServices(
        s, services=SERVICES, errors=2, deadletters=1, scrape_targets=FileScrapeTargets(s)
    ).start()
    server = DashboardServer(s, "127.0.0.1", free_port(), backlog=0).start()
    try:
        wait_for("the dashboard's Kafka reader", lambda: get_json(server.url + "/healthz")["events"]["assigned"], 60)
        # these fake services scraped, not only the series other tests' services of the same names
        # left in Prometheus's look-back (a rate over them is not zero yet)
        wait_for("every fake service scraped", lambda: scraped(server.url, services.instance_ids), 60)
        # Prometheus has scraped moe_fusion's (empty) event latency, so the events' latencies make a rate
        query = urllib.parse.urlencode({"query": 'emotion_event_latency_seconds_count{service="moe_fusion"}'})
        wait_for("moe_fusion's first scrape", lambda: get_json(f"{server.url}/api/query?{query}")["data"]["result"], 60)
        tag = uuid.uuid4().hex[:6]
        esc, calm = f"itest-escalating-{tag}", f"itest-calm-{tag}"
        calls = {esc: scripted_call(esc, ESCALATING), calm: scripted_call(calm, CALM)}
        services.emit([e for events in calls.values() for e in events])
        yield server, services, calls
    finally:
        server.stop()
        services.stop()


def test_api_serves_metrics_and_events(traffic):
    server, _services, calls = traffic
    url = server.url

    def throughput():
        res = get_json(url + "/api/query?q=throughput")["data"]["result"]
        rates = {r["metric"]["service"]: float(r["value"][1]) for r in res}
        return rates if set(SERVICES) <= set(rates) and all(rates[s] > 0 for s in SERVICES) else None

    wait_for("non-zero throughput in Prometheus through the proxy", throughput)
    wait_for("stage latency", lambda: get_json(url + "/api/query?q=stage_p95")["data"]["result"])
    rng = get_json(url + "/api/query_range?q=throughput&range=120")
    assert rng["status"] == "success" and rng["data"]["resultType"] == "matrix"
    # free PromQL is allowed over the platform's metrics only
    ok = get_json(url + "/api/query?" + urllib.parse.urlencode({"query": "sum(emotion_service_up)"}))
    assert float(ok["data"]["result"][0]["value"][1]) >= len(SERVICES)
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(url + "/api/query?" + urllib.parse.urlencode({"query": "prometheus_build_info"}))
    assert refused.value.code == 400

    expected = sum(len(v) for v in calls.values())

    def all_utterances():
        snap = get_json(url + "/api/calls")
        return snap if sum(len(c["utterances"]) for c in snap["calls"]) == expected else None

    snap = wait_for("both calls in /api/calls", all_utterances)
    by_id = {c["call_id"]: c for c in snap["calls"]}
    assert set(by_id) == set(calls)
    for call_id, events in calls.items():
        assert [u["label"] for u in by_id[call_id]["utterances"]] == [e.label for e in events]
    esc, calm = list(calls)
    escalation = by_id[esc]["escalation"]
    assert by_id[esc]["escalated"] and escalation["labels"] == ["anger", "disgust", "sadness"]
    assert escalation["kind"] == "negative_run" and escalation["ongoing"] and escalation["length"] == 3
    assert escalation["since"] == f"{esc}:00003" and escalation["reason"].startswith("3 consecutive negative customer")
    assert not by_id[calm]["escalated"] and by_id[calm]["escalation"] is None
    assert snap["escalated_calls"] == snap["escalating_calls"] == 1

    # Server-Sent Events replay what the reader consumed, in order per call
    with urllib.request.urlopen(url + "/api/events/stream?since=0", timeout=10) as stream:
        got = []
        while len(got) < expected:
            line = stream.readline().decode()
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
    for call_id, events in calls.items():
        assert [e["utterance_id"] for e in got if e["call_id"] == call_id] == [e.utterance_id for e in events]


def test_grafana_expressions_run_on_the_real_prometheus(traffic):
    """Every expression of the Grafana dashboard is valid PromQL for this Prometheus (and passes the proxy)."""
    server, _services, _calls = traffic
    board = json.loads(
        (Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "emotion-dashboard.json").read_text()
    )

    def targets(panels):
        for p in panels:
            yield from targets(p.get("panels", []))
            yield from ((p["title"], t["expr"]) for t in p.get("targets", []))

    answered = 0
    for title, expr in targets(board["panels"]):
        q = expr.replace("$service", ".*").replace("$__rate_interval", "30s").replace("$__range", "5m")
        body = get_json(server.url + "/api/query?" + urllib.parse.urlencode({"query": q}))
        assert body["status"] == "success", (title, body)
        answered += bool(body["data"]["result"])
    assert answered >= 20  # all but the ASR's audio chunks and utterances (no synthetic service counts them)


def test_page_in_headless_chromium(traffic, tmp_path):
    server, services, calls = traffic
    url = server.url
    wait_for(
        "throughput and batch metrics",
        lambda: (
            get_json(url + "/api/query?q=throughput")["data"]["result"]
            and get_json(url + "/api/query?q=batch_mean")["data"]["result"]
            and get_json(url + "/api/query?q=lag_by_service")["data"]["result"]
        ),
    )

    done = run_browser(url + "/", "--dump-dom")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    html = done.stdout.decode()
    (tmp_path / "dashboard.html").write_text(html)
    dom = Dom(html)
    ids = dom.by_id
    assert ids.get("chart-throughput", {}).get("data-state") == "ok", f"page did not render: {html[:3000]}"

    # throughput: a non-zero total and one legend entry per service
    assert float(ids["chart-throughput"]["data-total"]) > 0
    legend = {e["data-series"]: float(e["data-value"] or 0) for e in dom.within("legend-item", "chart-throughput")}
    assert set(SERVICES) <= set(legend) and all(legend[s] > 0 for s in SERVICES), legend
    assert float(ids["kpi-throughput"]["data-value"]) > 0
    assert float(ids["chart-audio"]["data-total"]) > 0  # asr_alignment reports audio seconds

    # the other metric panels have data
    for chart in ("chart-lag", "chart-latency", "chart-batch", "chart-errors", "chart-deadletters"):
        assert ids[chart]["data-state"] == "ok", (chart, ids[chart])
    assert set(SERVICES) <= set(ids["chart-latency"]["data-services"].split(","))
    # 2 errors and 1 dead letter per synthetic service (more if a real service of the same name ran too)
    assert float(ids["chart-errors"]["data-total"]) >= 2 * len(SERVICES)
    assert float(ids["chart-deadletters"]["data-total"]) >= 1 * len(SERVICES)
    assert set(SERVICES) <= {r["data-service"] for r in dom.within("row", "chart-deadletters")}
    # of the 2 errors, the KafkaTimeoutError was a consumer call failed by its bound
    assert ids["chart-kafka-bounded"]["data-state"] == "ok", ids["chart-kafka-bounded"]
    assert float(ids["chart-kafka-bounded"]["data-total"]) >= len(SERVICES)
    bounded = {r["data-service"]: r["data-kinds"] for r in dom.within("row", "chart-kafka-bounded")}
    assert set(SERVICES) <= set(bounded) and all("consumer" in bounded[s] for s in SERVICES), bounded
    assert ids["status-prometheus"]["data-state"] == "ok" and ids["status-events"]["data-state"] == "ok"

    # timelines: both calls, their labels in time order, the escalation on the right one
    timeline = ids["chart-timelines"]
    assert set(timeline["data-calls"].split(",")) == set(calls)
    rows = {r["data-call-id"]: r for r in dom.within("call-row")}
    for call_id, events in calls.items():
        assert rows[call_id]["data-labels"].split(",") == [e.label for e in events]
        assert rows[call_id]["data-speakers"].split(",") == [e.speaker for e in events]
        blocks = [b for b in dom.within("utt", "chart-timelines") if b["_call"] == call_id]
        assert sorted((b["data-utterance-id"], b["data-label"]) for b in blocks) == sorted(
            (e.utterance_id, e.label) for e in events
        )
    esc, calm = list(calls)
    assert rows[esc]["data-escalated"] == "true" and rows[calm]["data-escalated"] == "false"
    assert rows[esc]["data-escalation"] == "ongoing" and rows[calm]["data-escalation"] == ""
    assert timeline["data-escalated"] == esc
    assert ids["status-escalations"]["data-value"] == "1" and ids["status-escalations"]["data-ongoing"] == "1"
    badges = dom.within("esc-badge", "chart-timelines")
    assert [(b["_call"], b["data-kind"]) for b in badges] == [(esc, "negative_run")]

    # emotion mix: the counts of what was produced
    produced = collections.Counter(e.label for events in calls.values() for e in events)
    mix = {r["data-label"]: int(r["data-count"]) for r in dom.within("bar-row", "chart-emotion-mix")}
    assert {k: v for k, v in mix.items() if v} == dict(produced)
    assert int(ids["chart-emotion-mix"]["data-total"]) == sum(produced.values())
    assert ids["chart-emotion-mix"]["data-source"] == "events"
    # moe_fusion's emotion_events_total counted them too (and more if a real moe_fusion ran on this stack lately)
    metric = {r["data-label"]: int(r["data-metric-count"]) for r in dom.within("bar-row", "chart-emotion-mix")}
    assert all(metric[label] >= n for label, n in produced.items()), metric
    assert float(ids["kpi-e2e"]["data-value"]) > 0
    assert {"moe_fusion"} <= {e["data-service"] for e in dom.within("join")}

    # the screenshot: the page is drawn (not blank), with the emotion colours of the timelines
    shot = tmp_path / "dashboard.png"
    done = run_browser(url + "/", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr.decode()[-2000:]
    check_screenshot(shot, {label: hex_rgb(EMOTION_COLOURS[label]) for label in ("anger", "happiness", "sadness")})
    keep = os.environ.get("EMOTION_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    print(f"dashboard screenshot: {shot}")
