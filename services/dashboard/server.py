"""The operators' dashboard: one page, its static files, and a small JSON API, on the stdlib.

Endpoints (GET only; anything else answers 405):

``/``                         the page (``static/index.html``)
``/static/<file>``            its JavaScript and CSS (served by the project: no CDN)
``/api/query``                PromQL instant query, proxied to the stack's Prometheus
``/api/query_range``          PromQL range query, proxied likewise
``/api/calls``                active calls' timelines, escalations and the emotion mix
``/api/events?since=SEQ``     the latest emotion events after a sequence number
``/api/events/stream``        the same as Server-Sent Events (``Last-Event-ID`` resumes)
``/api/config``               refresh interval, labels, colours and panel names for the page
``/healthz``                  liveness, Prometheus reachability and the Kafka reader's state

The Prometheus proxy is not an open proxy: only ``/api/v1/query`` and ``/api/v1/query_range`` are
reachable, only with the parameters ``q`` (a named panel query) or ``query`` (PromQL over this
platform's metrics, see :mod:`services.dashboard.promql`), ``time``, ``start``, ``end``, ``step``
and ``range`` (seconds back from now when ``start``/``end`` are left out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from services.escalation import ESCALATION_SPEAKER, ESCALATION_TURNS, RISING_MIN_FINAL
from shared.settings import EMOTIONS, Settings

from .events import EventFeed, EventStore
from .promql import PANEL_QUERIES, QueryRejected, check_query, emotion_mix_query

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 8088
REFRESH_MS = 2000
PROXY_TIMEOUT_S = 5.0
MAX_RANGE_S = 7 * 24 * 3600
CALLS_SHOWN = 12
"""Timelines ``/api/calls`` returns by default (the page's): escalated calls first, then the newest."""
TIMELINE_SPAN_S = 300
"""Seconds of each call drawn by default: utterances ending earlier than that before its last end are left out."""
_PARAM_VALUE = re.compile(r"^[0-9A-Za-z.:+\-]{1,40}$")
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-]+\.(?:js|css|html|svg|ico|png)$")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

EMOTION_COLOURS = {
    "anger": "#e5484d",
    "sadness": "#3e7bfa",
    "neutral": "#8b95a5",
    "happiness": "#30a46c",
    "fear": "#8e4ec6",
    "disgust": "#a18072",
    "surprise": "#f5a524",
}
"""One colour per label, shared by the page and the Grafana dashboard's overrides."""


class ProxyError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def prometheus_request(base_url: str, path: str, params: dict[str, list[str]], now: float | None = None) -> str:
    """The upstream URL for one proxied request, or :class:`ProxyError` (400/404) when refused.

    ``path`` is the dashboard's (``/api/query`` or ``/api/query_range``); ``params`` as from
    :func:`urllib.parse.parse_qs`.
    """
    kinds = {
        "/api/query": ("query", {"q", "query", "time"}),
        "/api/query_range": ("query_range", {"q", "query", "start", "end", "step", "range"}),
    }
    if path not in kinds:
        raise ProxyError(404, f"no such endpoint {path}")
    endpoint, allowed = kinds[path]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ProxyError(400, f"parameter(s) not allowed: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    repeated = sorted(k for k, v in params.items() if len(v) != 1)
    if repeated:
        raise ProxyError(400, f"parameter(s) given more than once: {', '.join(repeated)}")
    p = {k: v[0] for k, v in params.items()}
    if ("q" in p) == ("query" in p):
        raise ProxyError(400, "give exactly one of q (a named panel query) or query (PromQL)")
    if "q" in p:
        if p["q"] not in PANEL_QUERIES:
            raise ProxyError(400, f"unknown panel query {p['q']!r}")
        expr = PANEL_QUERIES[p["q"]]
    else:
        try:
            expr = check_query(p["query"])
        except QueryRejected as exc:
            raise ProxyError(400, str(exc)) from exc
    for key in ("time", "start", "end", "step", "range"):
        if key in p and not _PARAM_VALUE.match(p[key]):
            raise ProxyError(400, f"bad value for {key}")
    upstream = {"query": expr}
    if endpoint == "query":
        if "time" in p:
            upstream["time"] = p["time"]
    else:
        now = time.time() if now is None else now
        try:
            span = float(p.get("range", 300))
        except ValueError as exc:
            raise ProxyError(400, "range must be a number of seconds") from exc
        if not 0 < span <= MAX_RANGE_S:
            raise ProxyError(400, f"range must be in (0, {MAX_RANGE_S}] seconds")
        upstream["end"] = p.get("end", f"{now:.3f}")
        upstream["start"] = p.get("start", f"{now - span:.3f}")
        upstream["step"] = p.get("step", f"{max(1.0, span / 150):g}")
    return f"{base_url.rstrip('/')}/api/v1/{endpoint}?{urllib.parse.urlencode(upstream)}"


class Dashboard:
    """The application behind the HTTP handler: Prometheus proxy, event store and feed."""

    def __init__(
        self,
        settings: Settings,
        events: bool = True,
        backlog: int = 500,
        since: float | None = None,
        per_call: int = 100,
        mix_window_s: float = 300.0,
        active_window_s: float = 600.0,
        prometheus_url: str | None = None,
    ):
        self.settings = settings
        p = settings.prometheus
        self.prometheus_url = prometheus_url or f"http://{p.host}:{p.port}"
        self.store = EventStore(
            per_call=per_call,
            mix_window_s=mix_window_s,
            active_window_s=active_window_s,
            negative=settings.events.negative_labels,
        )
        self.feed = EventFeed(settings, self.store, backlog=backlog, since=since) if events else None
        self.stopping = threading.Event()
        self.started_at = time.time()

    def start(self) -> None:
        if self.feed is not None:
            self.feed.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.feed is not None:
            self.feed.stop()

    # ---- API bodies -----------------------------------------------------------------------
    def proxy(self, path: str, params: dict[str, list[str]]) -> tuple[int, bytes]:
        try:
            url = prometheus_request(self.prometheus_url, path, params)
        except ProxyError as exc:
            return exc.status, _json({"status": "error", "errorType": "bad_data", "error": exc.message})
        try:
            with urllib.request.urlopen(url, timeout=PROXY_TIMEOUT_S) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:  # Prometheus explains bad PromQL in a JSON body
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return 502, _json(
                {
                    "status": "error",
                    "errorType": "unavailable",
                    "error": f"Prometheus at {self.prometheus_url} is unreachable: {reason}",
                }
            )

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(f"{self.prometheus_url}/-/ready", timeout=1.0) as resp:
                prom_ok = resp.status == 200
        except (urllib.error.URLError, OSError):
            prom_ok = False
        return {
            "status": "ok",
            "uptime_s": round(time.time() - self.started_at, 1),
            "prometheus": {"url": self.prometheus_url, "ready": prom_ok},
            "events": self.feed.status() if self.feed else {"enabled": False},
            "store": self.store.snapshot(max_calls=0)["stats"],
        }

    def config(self) -> dict:
        return {
            "refresh_ms": REFRESH_MS,
            "stack": self.settings.stack_name,
            "emotions": list(EMOTIONS),
            "colours": EMOTION_COLOURS,
            "negative": sorted(self.store.negative),
            "escalation": {
                "speaker": ESCALATION_SPEAKER,
                "turns": ESCALATION_TURNS,
                "rising_min_final": RISING_MIN_FINAL,
            },
            "mix_window_s": self.store.mix_window_s,
            "mix_query": emotion_mix_query(self.store.mix_window_s),
            "panels": PANEL_QUERIES,
            "topics": self.settings.topics.model_dump(),
        }


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _int(params: dict[str, list[str]], key: str, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(params.get(key, [default])[0])))
    except ValueError:
        return default


class Handler(BaseHTTPRequestHandler):
    server_version = "emotion-dashboard"
    app: Dashboard  # set on the subclass made by make_server

    # ---- plumbing -------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _headers(self, status: int, content_type: str, length: int | None = None, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", extra: dict | None = None
    ) -> None:
        self._headers(status, content_type, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, extra: dict | None = None) -> None:
        self._send(status, _json({"status": "error", "error": message}), extra=extra)

    def _refuse(self) -> None:
        self._error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{self.command} is not allowed: the dashboard is read-only",
            extra={"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    # ---- routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        path, params = url.path, urllib.parse.parse_qs(url.query, keep_blank_values=True)
        app = self.app
        try:
            if path in ("/", "/index.html"):
                self._static("index.html")
            elif path.startswith("/static/"):
                self._static(path[len("/static/") :])
            elif path == "/healthz":
                self._send(200, _json(app.health()))
            elif path in ("/api/query", "/api/query_range"):
                if self.command == "HEAD":
                    return self._send(200, b"")
                status, body = app.proxy(path, params)
                self._send(status, body)
            elif path == "/api/calls":
                snap = app.store.snapshot(
                    max_calls=_int(params, "max_calls", CALLS_SHOWN, 0, 200),
                    span_s=_int(params, "span", TIMELINE_SPAN_S, 10, 24 * 3600),
                )
                snap["events"] = app.feed.status() if app.feed else {"enabled": False}
                self._send(200, _json(snap))
            elif path == "/api/events":
                since = _int(params, "since", 0, 0, 1 << 62)
                call_id = params.get("call_id", [None])[0]
                last, events = app.store.since(since, limit=_int(params, "limit", 200, 0, 1000), call_id=call_id)
                self._send(200, _json({"last_seq": last, "events": events}))
            elif path == "/api/events/stream":
                self._stream(params)
            elif path == "/api/config":
                self._send(200, _json(app.config()))
            else:
                self._error(404, f"no such page {path}")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _static(self, name: str) -> None:
        if not _STATIC_NAME.match(name) or not (STATIC_DIR / name).is_file():
            return self._error(404, f"no such file {name!r}")
        body = (STATIC_DIR / name).read_bytes()
        self._send(200, body, _CONTENT_TYPES[Path(name).suffix])

    def _stream(self, params: dict[str, list[str]]) -> None:
        """Server-Sent Events: ``event: emotion`` with ``id: <seq>``; a comment every 15 s keeps
        proxies from closing an idle stream.  Starts after ``Last-Event-ID``, else ``?since=``,
        else at the newest event (only what arrives from now on)."""
        store, stopping = self.app.store, self.app.stopping
        header = self.headers.get("Last-Event-ID")
        if header and header.isdigit():
            last = int(header)
        else:
            last = _int(params, "since", store.last_seq, 0, 1 << 62)
        call_id = params.get("call_id", [None])[0]
        self._headers(200, "text/event-stream; charset=utf-8", extra={"Connection": "close", "X-Accel-Buffering": "no"})
        if self.command == "HEAD":
            return
        self.wfile.write(b"retry: 2000\n\n")
        self.wfile.flush()
        quiet_since = time.monotonic()
        while not stopping.is_set():
            store.wait(last, timeout=1.0)
            newest, events = store.since(last, limit=1000)
            chunks = []
            for e in events:
                if call_id is None or e["call_id"] == call_id:
                    chunks.append(f"id: {e['seq']}\nevent: emotion\ndata: {json.dumps(e, separators=(',', ':'))}\n\n")
            last = max(last, newest)
            if chunks:
                self.wfile.write("".join(chunks).encode("utf-8"))
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= 15:
                self.wfile.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            else:
                continue
            self.wfile.flush()


class DashboardServer:
    """The HTTP server and its application, started in the background (``start``/``stop``)."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options):
        self.app = Dashboard(settings, **options)
        handler = type("BoundHandler", (Handler,), {"app": self.app})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> "DashboardServer":
        self.app.start()
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.25}, name="dashboard-http", daemon=True
        )
        self._thread.start()
        log.info("dashboard on %s (Prometheus %s)", self.url, self.app.prometheus_url)
        return self

    def stop(self) -> None:
        self.app.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_dashboard(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    synthetic_traffic: bool = False,
    **options,
) -> None:
    """Serve the dashboard until SIGINT/SIGTERM (or KeyboardInterrupt); with ``synthetic_traffic``,
    beside fake metrics of every service and a scripted call every few seconds
    (:mod:`services.dashboard.synthetic`)."""
    server = DashboardServer(settings, host, port, **options).start()
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
    events = (
        f"events from Kafka {settings.kafka.bootstrap} topic {settings.topics.emotions}"
        if server.app.feed is not None
        else "no events"
    )
    print(f"emotion dashboard: {server.url}  (Prometheus {server.app.prometheus_url}, {events})", flush=True)
    try:
        with contextlib.ExitStack() as stack:
            if synthetic_traffic:
                from .synthetic import SyntheticTraffic

                traffic = stack.enter_context(SyntheticTraffic(settings))
                print(f"synthetic traffic for stack {settings.stack_name}: {', '.join(traffic.services)}", flush=True)
            while not done.wait(0.5):
                if synthetic_traffic:
                    traffic.tick()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the dashboard page: per-service throughput, consumer lag, stage latency, batch sizes, errors "
        "and dead letters from Prometheus, and live per-call emotion timelines from the emotions topic."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus to query (default http://<prometheus.host>:<prometheus.port> of the settings)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=500,
        help="emotion events to re-read per partition at start, to show calls in progress (default 500)",
    )
    parser.add_argument("--events-per-call", type=int, default=100, help="events kept in memory per call (default 100)")
    parser.add_argument(
        "--mix-window", type=float, default=300.0, help="seconds of events counted in the emotion mix (default 300)"
    )
    parser.add_argument("--no-events", action="store_true", help="do not read the emotions topic (metrics only)")
    parser.add_argument(
        "--synthetic-traffic",
        action="store_true",
        help="also run fake metrics for every service and a scripted call every 5 s, announced to the stack's "
        "Prometheus and produced to its emotions topic: the dashboard moving without the pipeline "
        "(demos, screenshots)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from shared.logs import configure_logging

    configure_logging(settings.runtime.log_level, settings.runtime.log_format, service="dashboard")
    try:
        run_dashboard(
            settings,
            args.host,
            args.port,
            events=not args.no_events,
            backlog=args.backlog,
            per_call=args.events_per_call,
            mix_window_s=args.mix_window,
            prometheus_url=args.prometheus_url,
            synthetic_traffic=args.synthetic_traffic,
        )
    except OSError as exc:
        print(f"emotion dashboard: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
