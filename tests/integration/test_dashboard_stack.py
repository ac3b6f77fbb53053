"""The dashboard on the real stack: synthetic services scraped by Prometheus, scripted emotion
events on Kafka, the page rendered by headless Chromium and read back from its DOM and a
screenshot."""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest

from services.dashboard.server import DashboardServer
from services.dashboard.synthetic import CALM, ESCALATING, SyntheticServices, produce_events, scripted_call

pytestmark = pytest.mark.integration

SERVICES = ("asr", "text_encoder")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _wait(what: str, check, timeout_s: float = 90.0, every: float = 1.0):
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last problem
            last = exc
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed: apt-get install -y chromium (deploy/local/install-system.sh)")


def _browser(url: str, *args: str, budget_ms: int = 10000, timeout_s: float = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="dashboard-chromium-") as profile:
        cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args, url]
        return subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)


class _Dom(HTMLParser):
    """Every element's attributes (plus ``_chart``: the id of the enclosing ``chart-*`` element)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.elements: list[dict] = []
        self.by_id: dict[str, dict] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        a = {"_tag": tag, **{k: (v or "") for k, v in attrs}}
        charts = [i for _t, i in self._open if i and i.startswith("chart-")]
        a["_chart"] = charts[-1] if charts else None
        self.elements.append(a)
        if "id" in a:
            self.by_id[a["id"]] = a
        if tag not in self.VOID:
            self._open.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def within(self, cls: str, chart: str | None = None) -> list[dict]:
        return [e for e in self.elements
                if cls in e.get("class", "").split() and (chart is None or e["_chart"] == chart)]


@pytest.fixture(scope="module")
def traffic(stack_settings):
    """Two fake services scraped by Prometheus, the dashboard reading from the end of the topic,
    then two scripted calls produced to the emotions topic."""
    s = stack_settings
    services = SyntheticServices(s, services=SERVICES, errors=2, deadletters=1).start()
    server = DashboardServer(s, "127.0.0.1", _free_port(), backlog=0).start()
    try:
        _wait("the dashboard's Kafka reader", lambda: _get(server.url + "/healthz")["events"]["assigned"], 60)
        tag = uuid.uuid4().hex[:6]
        esc, calm = f"itest-escalating-{tag}", f"itest-calm-{tag}"
        calls = {esc: scripted_call(esc, ESCALATING), calm: scripted_call(calm, CALM)}
        produce_events(s, [e for events in calls.values() for e in events])
        yield server, services, calls
    finally:
        server.stop()
        services.stop()


def test_api_serves_metrics_and_events(traffic):
    server, _services, calls = traffic
    url = server.url

    def throughput():
        res = _get(url + "/api/query?q=throughput")["data"]["result"]
        rates = {r["metric"]["service"]: float(r["value"][1]) for r in res}
        return rates if set(SERVICES) <= set(rates) and all(rates[s] > 0 for s in SERVICES) else None

    _wait("non-zero throughput in Prometheus through the proxy", throughput)
    _wait("stage latency", lambda: _get(url + "/api/query?q=stage_p95")["data"]["result"])
    rng = _get(url + "/api/query_range?q=throughput&range=120")
    assert rng["status"] == "success" and rng["data"]["resultType"] == "matrix"
    # free PromQL is allowed over the platform's metrics only
    ok = _get(url + "/api/query?" + urllib.parse.urlencode({"query": "sum(emotion_service_up)"}))
    assert float(ok["data"]["result"][0]["value"][1]) >= len(SERVICES)
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(url + "/api/query?" + urllib.parse.urlencode({"query": "prometheus_build_info"}))
    assert refused.value.code == 400

    expected = sum(len(v) for v in calls.values())
    snap = _wait("both calls in /api/calls",
                 lambda: (lambda s: s if sum(len(c["utterances"]) for c in s["calls"]) == expected else None)(_get(url + "/api/calls")))
    by_id = {c["call_id"]: c for c in snap["calls"]}
    assert set(by_id) == set(calls)
    for call_id, events in calls.items():
        assert [u["label"] for u in by_id[call_id]["utterances"]] == [e.label for e in events]
    esc, calm = list(calls)
    assert by_id[esc]["escalated"] and by_id[esc]["escalation"]["labels"] == ["anger", "disgust", "sadness"]
    assert not by_id[calm]["escalated"]

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
    board = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "emotion-dashboard.json").read_text())

    def targets(panels):
        for p in panels:
            yield from targets(p.get("panels", []))
            yield from ((p["title"], t["expr"]) for t in p.get("targets", []))

    answered = 0
    for title, expr in targets(board["panels"]):
        q = expr.replace("$service", ".*").replace("$__rate_interval", "30s").replace("$__range", "5m")
        body = _get(server.url + "/api/query?" + urllib.parse.urlencode({"query": q}))
        assert body["status"] == "success", (title, body)
        answered += bool(body["data"]["result"])
    assert answered >= 10  # the panels over existing metrics have data; the new-metric ones may not


def test_page_in_headless_chromium(traffic, tmp_path):
    server, services, calls = traffic
    url = server.url
    _wait("throughput and batch metrics", lambda: _get(url + "/api/query?q=throughput")["data"]["result"]
          and _get(url + "/api/query?q=batch_mean")["data"]["result"]
          and _get(url + "/api/query?q=lag_by_service")["data"]["result"])

    done = _browser(url + "/", "--dump-dom")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    html = done.stdout.decode()
    (tmp_path / "dashboard.html").write_text(html)
    dom = _Dom()
    dom.feed(html)
    ids = dom.by_id
    assert ids.get("chart-throughput", {}).get("data-state") == "ok", f"page did not render: {html[:3000]}"

    # throughput: a non-zero total and one legend entry per service
    assert float(ids["chart-throughput"]["data-total"]) > 0
    legend = {e["data-series"]: float(e["data-value"] or 0) for e in dom.within("legend-item", "chart-throughput")}
    assert set(SERVICES) <= set(legend) and all(legend[s] > 0 for s in SERVICES), legend
    assert float(ids["kpi-throughput"]["data-value"]) > 0
    assert float(ids["chart-audio"]["data-total"]) > 0  # asr reports audio seconds

    # the other metric panels have data
    for chart in ("chart-lag", "chart-latency", "chart-batch", "chart-errors", "chart-deadletters"):
        assert ids[chart]["data-state"] == "ok", (chart, ids[chart])
    assert set(SERVICES) <= set(ids["chart-latency"]["data-services"].split(","))
    # 2 errors and 1 dead letter per synthetic service (more if a real service of the same name ran too)
    assert float(ids["chart-errors"]["data-total"]) >= 2 * len(SERVICES)
    assert float(ids["chart-deadletters"]["data-total"]) >= 1 * len(SERVICES)
    assert set(SERVICES) <= {r["data-service"] for r in dom.within("row", "chart-deadletters")}
    assert ids["status-prometheus"]["data-state"] == "ok" and ids["status-events"]["data-state"] == "ok"

    # timelines: both calls, their labels in time order, the escalation on the right one
    timeline = ids["chart-timelines"]
    assert set(timeline["data-calls"].split(",")) == set(calls)
    rows = {r["data-call-id"]: r for r in dom.within("call-row")}
    for call_id, events in calls.items():
        assert rows[call_id]["data-labels"].split(",") == [e.label for e in events]
        assert rows[call_id]["data-speakers"].split(",") == [e.speaker for e in events]
        blocks = [b for b in dom.within("utt", "chart-timelines") if b["data-utterance-id"].startswith(call_id + "/")]
        assert sorted((b["data-utterance-id"], b["data-label"]) for b in blocks) == sorted((e.utterance_id, e.label) for e in events)
    esc, calm = list(calls)
    assert rows[esc]["data-escalated"] == "true" and rows[calm]["data-escalated"] == "false"
    assert timeline["data-escalated"] == esc
    assert ids["status-escalations"]["data-value"] == "1"

    # emotion mix: the counts of what was produced
    produced = collections.Counter(e.label for events in calls.values() for e in events)
    mix = {r["data-label"]: int(r["data-count"]) for r in dom.within("bar-row", "chart-emotion-mix")}
    assert {k: v for k, v in mix.items() if v} == dict(produced)
    assert int(ids["chart-emotion-mix"]["data-total"]) == sum(produced.values())
    assert ids["chart-emotion-mix"]["data-source"] == "events"

    # the screenshot: the page is drawn (not blank), with the emotion colours of the timelines
    shot = tmp_path / "dashboard.png"
    done = _browser(url + "/", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr.decode()[-2000:]
    _check_screenshot(shot)
    keep = os.environ.get("EMOTION_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    print(f"dashboard screenshot: {shot}")


def _check_screenshot(path: Path) -> None:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (1000, 1400, 3)
    pixels = img.reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    assert len(colours) > 500, f"only {len(colours)} colours: blank page?"
    # pixels unlike both the page and the card backgrounds (the two commonest colours): text, charts
    page, card = colours[np.argsort(counts)[-2:]].astype(int)
    far = lambda ref: np.abs(pixels.astype(int) - ref).sum(axis=1) > 30  # noqa: E731
    drawn = (far(page) & far(card)).mean()
    assert drawn > 0.05, f"only {drawn:.1%} of the screenshot is drawn"
    for name, rgb in {"anger": (0xE5, 0x48, 0x4D), "happiness": (0x30, 0xA4, 0x6C), "sadness": (0x3E, 0x7B, 0xFA)}.items():
        near = (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 40).sum()
        assert near > 200, f"no {name} blocks in the screenshot"
