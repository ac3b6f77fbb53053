"""The dashboard without a stack: the PromQL proxy's rules, the Grafana dashboard's metrics, and
the per-call aggregation (timelines, escalations, emotion mix) on hand-made EmotionEvents."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from services.dashboard import grafana
from services.dashboard.events import EventStore
from services.dashboard.promql import (
    PANEL_QUERIES,
    QueryRejected,
    check_query,
    exact_increase,
    known_metric_names,
    metric_names,
)
from services.dashboard.server import STATIC_DIR, Dashboard, DashboardServer, ProxyError, prometheus_request
from services.dashboard.synthetic import CALM, ESCALATING, WORRIED, scripted_call
from shared.contracts import EmotionEvent
from shared.settings import PROJECT_ROOT, EventSettings, load_settings

PROM = "http://prometheus.test:9090"
NOW = 1_800_000_000.0


def qs(**params) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in params.items()}


def ev(
    call: str, i: int, speaker: str, label: str, start: float | None = None, created_at: float = NOW, **kw
) -> EmotionEvent:
    start = float(2 * i) if start is None else start
    return EmotionEvent(
        call_id=call,
        utterance_id=f"{call}:{i:05d}",
        speaker=speaker,
        start=start,
        end=start + 1.5,
        transcript=f"utterance {i}",
        label=label,
        probabilities={label: 0.8, "neutral": 0.2},
        model_version="test",
        created_at=created_at,
        **kw,
    )


# ---- the PromQL proxy ----------------------------------------------------------------------
class TestProxyRules:
    def test_named_query_goes_to_the_instant_endpoint(self):
        url = prometheus_request(PROM, "/api/query", qs(q="throughput"))
        parts = urllib.parse.urlsplit(url)
        assert parts.netloc == "prometheus.test:9090" and parts.path == "/api/v1/query"
        assert urllib.parse.parse_qs(parts.query) == {"query": [PANEL_QUERIES["throughput"]]}

    def test_range_query_defaults_to_the_last_five_minutes(self):
        url = prometheus_request(PROM, "/api/query_range", qs(q="audio"), now=NOW)
        p = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        assert urllib.parse.urlsplit(url).path == "/api/v1/query_range"
        assert float(p["end"][0]) == NOW and float(p["start"][0]) == NOW - 300 and float(p["step"][0]) == 2
        url = prometheus_request(PROM, "/api/query_range", qs(query="up", start="1", end="61", step="15s"))
        p = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        assert (p["start"], p["end"], p["step"], p["query"]) == (["1"], ["61"], ["15s"], ["up"])

    def test_free_promql_over_the_platform_metrics_passes(self):
        q = 'histogram_quantile(0.95, sum by (le, service) (rate(emotion_stage_seconds_bucket{stage="total"}[1m])))'
        assert urllib.parse.parse_qs(
            urllib.parse.urlsplit(prometheus_request(PROM, "/api/query", qs(query=q, time="1700000000"))).query
        ) == {"query": [q], "time": ["1700000000"]}

    @pytest.mark.parametrize(
        "path",
        [
            "/api/v1/query",
            "/api/v1/admin/tsdb/delete_series",
            "/api/series",
            "/api/labels",
            "/api/query/../v1/admin",
            "/-/quit",
        ],
    )
    def test_other_endpoints_are_not_proxied(self, path):
        with pytest.raises(ProxyError) as exc:
            prometheus_request(PROM, path, qs(q="throughput"))
        assert exc.value.status == 404

    @pytest.mark.parametrize(
        "params, why",
        [
            (qs(q="throughput", match="up"), "not allowed"),  # unknown parameter
            (qs(query="up", **{"match[]": "up"}), "not allowed"),
            (qs(q="throughput", time="1", start="0"), "not allowed"),  # range parameter on an instant query
            (qs(q=["throughput", "audio"]), "more than once"),
            (qs(), "exactly one"),
            (qs(q="throughput", query="up"), "exactly one"),
            (qs(q="drop_everything"), "unknown panel query"),
            (qs(query="node_cpu_seconds_total"), "only this platform's metrics"),
            (
                qs(query="sum(rate(process_cpu_seconds_total[1m])) + sum(emotion_service_up)"),
                "process_cpu_seconds_total",
            ),
            (qs(query='{__name__=~".+"}'), "__name__"),
            (qs(query="evil_function(emotion_service_up)"), "unknown function"),
            (qs(query="   "), "empty"),
            (qs(query="emotion_service_up" + " + emotion_service_up" * 200), "longer than"),
            (qs(q="throughput", time="now; rm -rf /"), "bad value"),
        ],
    )
    def test_refused(self, params, why):
        with pytest.raises(ProxyError) as exc:
            prometheus_request(PROM, "/api/query", params)
        assert exc.value.status == 400 and why in exc.value.message

    def test_range_is_bounded(self):
        for bad in ("0", "-5", "999999999", "abc"):
            with pytest.raises(ProxyError):
                prometheus_request(PROM, "/api/query_range", qs(q="throughput", range=bad))

    def test_metric_names_ignore_labels_functions_and_keywords(self):
        expr = (
            'sum by (service, le) (rate(emotion_a_total{service=~"$service", x="rate(up)"}[5m] offset 1m)) '
            "/ on (service) group_left sum without (kind) (emotion_b_total @ 1700000000) > bool 1e3 and up"
        )
        assert metric_names(expr) == {"emotion_a_total", "emotion_b_total", "up"}
        with pytest.raises(QueryRejected):
            check_query("rate(foo_total[1m])")

    def test_exact_increase_passes_with_a_grafana_variable_as_offset(self):
        expr = f"sum by (label) ({exact_increase('emotion_events_total', '$__range')})"
        assert metric_names(expr) == {"emotion_events_total"}
        assert "offset $__range" in expr and "increase(" not in expr


class FakePrometheus:
    """Records every request and answers like Prometheus."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self):
                outer.requests.append((self.command, self.path))
                body = json.dumps(
                    {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": [{"metric": {"service": "asr_alignment"}, "value": [NOW, "4.5"]}],
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_prometheus():
    fake = FakePrometheus()
    yield fake
    fake.close()


@pytest.fixture
def dashboard(fake_prometheus):
    server = DashboardServer(load_settings(), "127.0.0.1", 0, events=False, prometheus_url=fake_prometheus.url).start()
    yield server
    server.stop()


def request(server: DashboardServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class TestProxyOverHttp:
    def test_get_is_proxied(self, dashboard, fake_prometheus):
        status, headers, body = request(dashboard, "GET", "/api/query?q=throughput")
        assert status == 200 and json.loads(body)["data"]["result"][0]["value"][1] == "4.5"
        status, _, _ = request(dashboard, "GET", "/api/query_range?q=throughput&range=60")
        assert status == 200
        paths = [urllib.parse.urlsplit(p).path for _m, p in fake_prometheus.requests]
        assert paths == ["/api/v1/query", "/api/v1/query_range"]
        assert all(m == "GET" for m, _p in fake_prometheus.requests)

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    def test_only_get(self, dashboard, fake_prometheus, method):
        status, headers, body = request(dashboard, method, "/api/query?q=throughput", body=b"query=up")
        assert status == 405 and "GET" in headers["Allow"]
        assert fake_prometheus.requests == []

    @pytest.mark.parametrize(
        "path, status",
        [
            ("/api/v1/admin/tsdb/delete_series?match[]=up", 404),
            ("/api/v1/query?query=up", 404),
            ("/api/query?query=node_load1", 400),
            ("/api/query?q=throughput&target=http://evil.example/", 400),
            ("/api/query_range?query=up&match[]=x", 400),
            ("/static/../server.py", 404),
            ("/static/%2e%2e/server.py", 404),
        ],
    )
    def test_refused_over_http(self, dashboard, fake_prometheus, path, status):
        got, _, body = request(dashboard, "GET", path)
        assert got == status, body
        assert fake_prometheus.requests == []

    def test_prometheus_down_is_a_502(self):
        server = DashboardServer(
            load_settings(), "127.0.0.1", 0, events=False, prometheus_url="http://127.0.0.1:9"
        ).start()
        try:
            status, _, body = request(server, "GET", "/api/query?q=throughput")
            assert status == 502 and "unreachable" in json.loads(body)["error"]
            status, _, body = request(server, "GET", "/healthz")
            assert status == 200 and json.loads(body)["prometheus"]["ready"] is False
        finally:
            server.stop()


class TestPage:
    def test_page_and_assets_are_served_by_the_project(self, dashboard):
        status, headers, body = request(dashboard, "GET", "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        html = body.decode()
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/static/") for a in assets)
        for asset in assets:
            s, h, b = request(dashboard, "GET", asset)
            assert s == 200 and b, asset
        # no CDN, no remote URL anywhere in the page's files
        for f in STATIC_DIR.iterdir():
            text = f.read_text()
            assert not re.search(
                r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text.replace("http://www.w3.org/2000/svg", "")
            ), f

    def test_every_chart_has_a_stable_id(self):
        html = (STATIC_DIR / "index.html").read_text()
        for chart in (
            "throughput",
            "audio",
            "lag",
            "latency",
            "batch",
            "errors",
            "deadletters",
            "emotion-mix",
            "timelines",
            "events",
        ):
            assert f'id="chart-{chart}"' in html

    def test_config_and_health(self, dashboard):
        status, _, body = request(dashboard, "GET", "/api/config")
        cfg = json.loads(body)
        assert (
            status == 200
            and cfg["refresh_ms"] == 2000
            and set(cfg["negative"]) == {"anger", "sadness", "fear", "disgust"}
        )
        assert set(cfg["colours"]) == set(cfg["emotions"])
        # the page counts emotion_events_total over its own mix window, through the proxy's free PromQL
        assert check_query(cfg["mix_query"]) and f"offset {round(cfg['mix_window_s'])}s" in cfg["mix_query"]
        status, _, body = request(dashboard, "GET", "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"


# ---- the Grafana dashboard -----------------------------------------------------------------
def _targets(panels):
    for p in panels:
        yield from _targets(p.get("panels", []))
        for t in p.get("targets", []):
            yield p, t


class TestGrafana:
    path = PROJECT_ROOT / "deploy" / "grafana" / "emotion-dashboard.json"

    def test_json_is_valid_and_up_to_date(self):
        text = self.path.read_text()
        board = json.loads(text)
        assert text == grafana.render(), "stale: run emotion grafana"
        assert board["schemaVersion"] >= 39 and board["uid"] and board["title"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for p in board["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0

    def test_panels_use_only_known_metrics(self):
        board = json.loads(self.path.read_text())
        known = known_metric_names()
        used: set[str] = set()
        targets = list(_targets(board["panels"]))
        assert len(targets) >= 15
        for panel, target in targets:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= known, f"{panel['title']}: unknown metric(s) {names - known}"
            assert target["datasource"]["type"] == "prometheus"
            used |= names
        # every metric of shared/metrics.py is on the dashboard
        families = {n for n in known if not n.endswith("_created")} - {"up"}
        base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
        missing = {n for n in families if re.sub(r"_(bucket|sum|count)$", "", n) not in base}
        assert not missing, f"metrics not on the Grafana dashboard: {missing}"
        assert {"emotion_events_total", "emotion_event_latency_seconds_bucket", "emotion_join_pending"} <= used

    def test_page_queries_use_only_known_metrics(self):
        for name, expr in PANEL_QUERIES.items():
            assert metric_names(expr) <= known_metric_names(), name

    def test_service_variable_and_datasource(self):
        board = json.loads(self.path.read_text())
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        svc = variables["service"]
        assert svc["multi"] and svc["includeAll"]
        m = re.fullmatch(r"label_values\((\w+), service\)", svc["definition"])
        assert m and m.group(1) in known_metric_names()
        service_panels = [t for _p, t in _targets(board["panels"]) if 'service=~"$service"' in t["expr"]]
        assert len(service_panels) >= 10

    def test_provisioning(self):
        root = PROJECT_ROOT / "deploy" / "grafana"
        ds = yaml.safe_load((root / "provisioning" / "datasources" / "emotion-prometheus.yaml").read_text())
        assert ds["apiVersion"] == 1
        (source,) = ds["datasources"]
        assert source["type"] == "prometheus" and source["uid"] == grafana.DATASOURCE_UID
        board = json.loads(self.path.read_text())
        assert board["templating"]["list"][0]["current"]["value"] == grafana.DATASOURCE_UID
        prov = yaml.safe_load((root / "provisioning" / "dashboards" / "emotion.yaml").read_text())
        (provider,) = prov["providers"]
        compose = yaml.safe_load((root / "docker-compose.yml").read_text())
        mounts = compose["services"]["grafana"]["volumes"]
        assert any(m.startswith("./emotion-dashboard.json:" + provider["options"]["path"] + "/") for m in mounts)
        assert any(m.startswith("./provisioning/datasources:/etc/grafana/provisioning/datasources") for m in mounts)


# ---- events: timelines, escalation, mix ------------------------------------------------------
class TestEscalation:
    """The page's escalation: :func:`services.escalation.detect_escalation` per call (its own tests are
    in ``test_escalation.py``), ongoing or past."""

    def test_ongoing_escalation_on_the_timeline(self):
        store = EventStore()
        for e in [
            ev("c", 0, "customer", "neutral"),
            ev("c", 1, "customer", "anger"),
            ev("c", 2, "agent", "neutral"),
            ev("c", 3, "customer", "sadness"),
            ev("c", 4, "agent", "happiness"),
            ev("c", 5, "customer", "fear"),
        ]:
            store.add(e)
        snap = store.snapshot(now=NOW)
        (call,) = snap["calls"]
        assert call["escalated"] and snap["escalated_calls"] == 1 and snap["escalating_calls"] == 1
        assert call["escalation"] == {
            "kind": "negative_run",
            "since": "c:00001",
            "at": 2.0,
            "labels": ("anger", "sadness", "fear"),
            "length": 3,
            "ongoing": True,
            "reason": "3 consecutive negative customer utterances (anger, sadness, fear) from 2.0 s",
        }
        json.dumps(snap)  # what /api/calls sends

    def test_past_escalation_stays_flagged(self):
        store = EventStore()
        for i, label in enumerate(["anger", "anger", "anger", "neutral"]):
            store.add(ev("c", i, "customer", label))
        snap = store.snapshot(now=NOW)
        (call,) = snap["calls"]
        assert call["escalated"] and not call["escalation"]["ongoing"]
        assert snap["escalated_calls"] == 1 and snap["escalating_calls"] == 0

    @pytest.mark.parametrize(
        "events",
        [
            [ev("c", i, "customer", lab) for i, lab in enumerate(["anger", "surprise", "anger", "disgust"])],
            [ev("c", i, "agent", "anger") for i in range(5)] + [ev("c", 9, "customer", "sadness")],
            [],
        ],
    )
    def test_calm_calls(self, events):
        store = EventStore()
        for e in events + [ev("c", 20, "agent", "neutral")]:
            store.add(e)
        (call,) = store.snapshot(now=NOW)["calls"]
        assert not call["escalated"] and call["escalation"] is None

    def test_mono_calls_escalate(self):
        store = EventStore()
        for i in range(3):
            store.add(ev("m", i, "mono", "fear"))
        (call,) = store.snapshot(now=NOW)["calls"]
        assert call["escalated"] and call["escalation"]["length"] == 3 and call["speakers"] == ["mono"]

    def test_ongoing_first_then_past_then_calm(self):
        store = EventStore()
        for i, label in enumerate(["anger", "anger", "anger"]):
            store.add(ev("ongoing", i, "customer", label, created_at=NOW - 30))
        for i, label in enumerate(["anger", "anger", "anger", "happiness"]):
            store.add(ev("past", i, "customer", label, created_at=NOW - 20))
        store.add(ev("calm", 0, "customer", "neutral", created_at=NOW - 10))
        assert [c["call_id"] for c in store.snapshot(now=NOW)["calls"]] == ["ongoing", "past", "calm"]

    def test_negative_labels_from_the_settings(self, fake_prometheus):
        settings = load_settings(events=EventSettings(negative_labels=("surprise",)))
        app = Dashboard(settings, events=False, prometheus_url=fake_prometheus.url)
        for i in range(3):
            app.store.add(ev("s", i, "customer", "surprise"))
            app.store.add(ev("a", i, "customer", "anger"))
        calls = {c["call_id"]: c for c in app.store.snapshot(now=NOW)["calls"]}
        assert calls["s"]["escalated"] and not calls["a"]["escalated"]
        cfg = app.config()
        assert cfg["negative"] == ["surprise"] and cfg["escalation"] == {
            "speaker": "customer",
            "turns": 3,
            "rising_min_final": 0.5,
        }

    @pytest.mark.parametrize("seed", range(20))
    def test_scripted_calls(self, seed):
        """ESCALATING ends escalating; CALM and WORRIED never escalate, whatever their random probabilities."""

        def escalation(script):
            store = EventStore()
            for e in scripted_call(f"call-{seed}", script, created_at=NOW, seed=seed):
                store.add(e)
            return store.snapshot(now=NOW)["calls"][0]["escalation"]

        esc = escalation(ESCALATING)
        assert esc["kind"] == "negative_run" and esc["ongoing"] and esc["labels"] == ("anger", "disgust", "sadness")
        assert escalation(CALM) is None and escalation(WORRIED) is None


class TestEventStore:
    def test_timelines_per_call_with_lanes(self):
        store = EventStore()
        for e in [
            ev("a", 1, "customer", "anger"),
            ev("a", 0, "agent", "neutral"),
            ev("b", 0, "agent", "happiness"),
            ev("a", 2, "customer", "sadness"),
            ev("a", 3, "customer", "disgust"),
        ]:
            store.add(e)
        snap = store.snapshot(now=NOW + 1)
        calls = {c["call_id"]: c for c in snap["calls"]}
        assert set(calls) == {"a", "b"} and snap["active_calls"] == 2 and snap["escalated_calls"] == 1
        a = calls["a"]
        assert [u["label"] for u in a["utterances"]] == ["neutral", "anger", "sadness", "disgust"]
        assert a["speakers"] == ["agent", "customer"] and a["latest"] == {"agent": "neutral", "customer": "disgust"}
        assert a["escalated"] and a["escalation"]["since"] == "a:00001"
        assert calls["b"]["speakers"] == ["agent"] and not calls["b"]["escalated"]
        assert snap["calls"][0]["call_id"] == "a"  # escalated calls first
        assert a["t0"] == 0 and a["t1"] == 7.5

    def test_duplicates_are_dropped(self):
        store = EventStore()
        assert store.add(ev("a", 0, "agent", "neutral")) == 1
        assert store.add(ev("a", 0, "agent", "neutral")) is None  # at-least-once replay
        assert store.add(ev("a", 0, "agent", "happiness")) == 2  # same utterance, new label: replaced
        snap = store.snapshot(now=NOW)
        assert [u["label"] for u in snap["calls"][0]["utterances"]] == ["happiness"]
        assert snap["mix"]["total"] == 1 and store.duplicates == 2

    def test_emotion_mix_counts_the_window(self):
        store = EventStore(mix_window_s=60)
        store.add(ev("a", 0, "customer", "anger", created_at=NOW - 10))
        store.add(ev("a", 1, "customer", "anger", created_at=NOW - 5))
        store.add(ev("a", 2, "agent", "neutral", created_at=NOW - 1))
        store.add(ev("old", 0, "customer", "fear", created_at=NOW - 120))  # outside the window
        mix = store.snapshot(now=NOW)["mix"]
        assert mix["total"] == 3 and mix["window_s"] == 60
        assert mix["counts"]["anger"] == 2 and mix["counts"]["neutral"] == 1 and mix["counts"]["fear"] == 0
        assert mix["by_speaker"] == {"customer": {"anger": 2}, "agent": {"neutral": 1}}

    def test_inactive_calls_are_hidden_and_limits_hold(self):
        store = EventStore(per_call=3, max_calls=2, active_window_s=100)
        for i in range(5):
            store.add(ev("long", i, "agent", "neutral"))
        store.add(ev("stale", 0, "agent", "neutral", created_at=NOW - 500))
        snap = store.snapshot(now=NOW)
        assert [c["call_id"] for c in snap["calls"]] == ["long"]
        assert [u["utterance_id"] for u in snap["calls"][0]["utterances"]] == ["long:00002", "long:00003", "long:00004"]
        store.add(ev("x", 0, "agent", "neutral"))
        store.add(ev("y", 0, "agent", "neutral"))
        assert {c["call_id"] for c in store.snapshot(now=NOW)["calls"]} == {"x", "y"}

    def test_since_and_invalid_records(self):
        store = EventStore()
        for i in range(5):
            store.add(ev("a", i, "agent", "neutral"))
        last, events = store.since(3)
        assert last == 5 and [e["seq"] for e in events] == [4, 5] and events[0]["utterance_id"] == "a:00003"
        assert store.since(0, limit=2)[1][-1]["seq"] == 5
        assert store.add_raw(b"not json") is None and store.add_raw(None) is None and store.invalid == 2
        assert store.add_raw(ev("b", 0, "customer", "fear").encode()) == 6


class TestEventEndpoints:
    def test_calls_events_and_stream(self, dashboard):
        store = dashboard.app.store
        now = time.time()
        for e in [
            ev("a", 0, "agent", "neutral", created_at=now),
            ev("a", 1, "customer", "anger", created_at=now),
            ev("b", 0, "customer", "happiness", created_at=now),
        ]:
            store.add(e)
        status, _, body = request(dashboard, "GET", "/api/calls")
        snap = json.loads(body)
        assert status == 200 and {c["call_id"] for c in snap["calls"]} == {"a", "b"}
        assert snap["mix"]["counts"]["anger"] == 1 and snap["events"] == {"enabled": False}
        status, _, body = request(dashboard, "GET", "/api/events?since=1")
        assert [e["seq"] for e in json.loads(body)["events"]] == [2, 3]
        status, _, body = request(dashboard, "GET", "/api/events?since=0&call_id=b")
        assert [e["call_id"] for e in json.loads(body)["events"]] == ["b"]

        conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
        conn.request("GET", "/api/events/stream", headers={"Last-Event-ID": "1"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        threading.Timer(0.3, lambda: store.add(ev("c", 0, "customer", "fear", created_at=time.time()))).start()
        got = []
        while len(got) < 3:
            line = resp.fp.readline().decode()
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
        conn.close()
        assert [(e["seq"], e["call_id"], e["label"]) for e in got] == [
            (2, "a", "anger"),
            (3, "b", "happiness"),
            (4, "c", "fear"),
        ]
