"""The PromQL the dashboard may send to Prometheus.

Two ways in, both read-only (Prometheus's ``/api/v1/query`` and ``/api/v1/query_range``):

* ``q=<name>``: one of the named :data:`PANEL_QUERIES` the page draws (the normal path);
* ``query=<promql>``: free PromQL, accepted only when every metric it selects is one of this
  platform's (``emotion_*``, plus Prometheus's ``up``) and every function is a PromQL function.

:func:`metric_names` is also what the unit tests use to check that the Grafana dashboard only
reads metrics that exist in :mod:`shared.metrics`.
"""

from __future__ import annotations

import re
from functools import lru_cache

BUILTIN_METRICS = frozenset({"up"})
MAX_QUERY_CHARS = 2000

PROMQL_FUNCTIONS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
    deg delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
    histogram_stddev histogram_stdvar histogram_sum holt_winters double_exponential_smoothing hour
    idelta increase irate label_join label_replace last_over_time ln log10 log2 mad_over_time
    max_over_time min_over_time minute month pi predict_linear present_over_time quantile_over_time
    rad rate resets round scalar sgn sin sinh sort sort_desc sort_by_label sort_by_label_desc sqrt
    stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    """.split()
)
KEYWORDS = frozenset(
    "and or unless bool by without on ignoring group_left group_right offset inf nan start end".split()
)

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[$0-9A-Za-z_]+")
_AT = re.compile(r"@\s*(?:[0-9.eE+-]+|start\s*\(\s*\)|end\s*\(\s*\))")
_TOKENS = re.compile(
    r"(?P<num>(?:0x[0-9a-fA-F]+|\d[\w.]*|\.\d[\w.]*))|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)


class QueryRejected(ValueError):
    """A query the proxy does not forward; the message says why."""


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and labels left out).

    Raises :class:`QueryRejected` for what cannot be checked: ``__name__`` matchers and unknown
    functions.
    """
    if "__name__" in expr:
        raise QueryRejected("selecting metrics by __name__ is not allowed")
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _AT.sub(" ", text)
    names: set[str] = set()
    for m in _TOKENS.finditer(text):
        ident = m.group("id")
        if ident is None:
            continue
        if m.group("call"):
            if ident not in PROMQL_FUNCTIONS:
                raise QueryRejected(f"unknown function {ident!r}")
            continue
        if ident.lower() in KEYWORDS or ident.startswith("$"):
            continue
        names.add(ident)
    return names


def check_query(expr: str) -> str:
    """Return ``expr`` when the proxy may forward it, else raise :class:`QueryRejected`."""
    expr = expr.strip()
    if not expr:
        raise QueryRejected("empty query")
    if len(expr) > MAX_QUERY_CHARS:
        raise QueryRejected(f"query longer than {MAX_QUERY_CHARS} characters")
    names = metric_names(expr)
    if not names:
        raise QueryRejected("the query selects no metric")
    foreign = sorted(n for n in names if not (n.startswith("emotion_") or n in BUILTIN_METRICS))
    if foreign:
        raise QueryRejected(f"only this platform's metrics (emotion_*, up) may be queried, not {', '.join(foreign)}")
    return expr


@lru_cache(maxsize=1)
def known_metric_names() -> frozenset[str]:
    """Every sample name :class:`shared.metrics.ServiceMetrics` exports (``_total``, ``_bucket`` ...)
    and ``up``."""
    from shared.metrics import ServiceMetrics

    names: set[str] = set(BUILTIN_METRICS)
    for family in ServiceMetrics("probe").registry.collect():
        names |= _sample_names(family.name, family.type)
    return frozenset(names)


def _sample_names(base: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{base}_total", f"{base}_created"}
    if kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
    return {base}


# ---- the page's panels -------------------------------------------------------------------------
RATE = "30s"
"""Window of the page's rates: 30 scrapes at the test stacks' 1 s interval (15 at the default 2 s),
so the throughput reacts within seconds and falls to 0 about 30 s after the traffic stops."""
WINDOW = "5m"
"""Window of the page's latency and batch-size quantiles: they describe the last five minutes of
work, so an idle pipeline still shows how its last batches went (a 30 s window would be empty)."""


def exact_increase(counter: str, window: str) -> str:
    """PromQL for how much each series of ``counter`` grew over ``window``, in whole events.

    The growth since ``window`` ago where that is not negative, else (the series is younger than the
    window, or its service restarted) the series' whole value.  Unlike ``increase()``, this neither
    extrapolates to the window's edges nor misses what was counted before the series' first scrape,
    so a test can compare it with the events it produced.
    """
    return f"(({counter} - {counter} offset {window}) >= 0) or {counter}"


def emotion_mix_query(window_s: float) -> str:
    """Emotion events per label over the last ``window_s`` seconds, from moe_fusion's
    ``emotion_events_total``: the page sends it with its own mix window, so that it counts the same
    events as the mix it reads from the emotions topic."""
    return f"sum by (label) ({exact_increase('emotion_events_total', f'{round(window_s)}s')})"


STAGE_BUCKETS = f"sum by (service, stage, le) (rate(emotion_stage_seconds_bucket[{WINDOW}]))"
EVENT_BUCKETS = f"sum by (le) (rate(emotion_event_latency_seconds_bucket[{WINDOW}]))"

PANEL_QUERIES: dict[str, str] = {
    # throughput
    "throughput": f"sum by (service) (rate(emotion_messages_total[{RATE}]))",
    "deadletter_rate": f'sum by (service) (rate(emotion_messages_total{{outcome="deadletter"}}[{RATE}]))',
    "produced": f"sum by (topic) (rate(emotion_produced_total[{RATE}]))",
    "audio": f"sum by (service) (rate(emotion_audio_seconds_total[{RATE}]))",
    # backlog: consumer lag, and utterances waiting in the joins for their other inputs
    "lag": "sum by (topic) (max by (topic, partition) (emotion_consumer_lag))",
    "lag_by_service": "sum by (service, topic) (emotion_consumer_lag)",
    "join_pending": "sum by (service) (emotion_join_pending)",
    # latency per stage, and end to end (utterance message -> emotion event, from moe_fusion)
    "stage_p50": f"histogram_quantile(0.5, {STAGE_BUCKETS})",
    "stage_p95": f"histogram_quantile(0.95, {STAGE_BUCKETS})",
    "total_p95": f'histogram_quantile(0.95, sum by (service, le) (rate(emotion_stage_seconds_bucket{{stage="total"}}[{RATE}])))',
    "event_latency_p50": f"histogram_quantile(0.5, {EVENT_BUCKETS})",
    "event_latency_p95": f"histogram_quantile(0.95, {EVENT_BUCKETS})",
    # batches
    "batch_mean": f"sum by (service) (rate(emotion_batch_size_sum[{WINDOW}])) "
    f"/ sum by (service) (rate(emotion_batch_size_count[{WINDOW}]))",
    "batch_p95": f"histogram_quantile(0.95, sum by (service, le) (rate(emotion_batch_size_bucket[{WINDOW}])))",
    # failures (totals since each service started: counters, so a restart resets them)
    "errors": "sum by (service, kind) (emotion_errors_total)",
    "errors_rate": "sum by (service) (rate(emotion_errors_total[1m]))",
    "deadletters": "sum by (service, error_type) (emotion_deadletters_total)",
    "kafka_bounded": "sum by (service, role) (emotion_kafka_calls_bounded_total)",
    # cache and health
    "cache_hit_ratio": 'sum by (service) (rate(emotion_cache_requests_total{result="hit"}[1m])) '
    "/ sum by (service) (rate(emotion_cache_requests_total[1m]))",
    "service_up": "max by (service) (emotion_service_up)",
    "targets_up": 'sum by (service) (up{job="services"})',
    # emotions (moe_fusion): events per label in the last 5 minutes, counted exactly
    "emotion_mix_metric": emotion_mix_query(300),
}

for _name, _expr in PANEL_QUERIES.items():  # the named queries obey the same rules
    check_query(_expr)
