"""The single-node local stack: Kafka, Redis, Triton and Prometheus on one machine.

Public API (the ``emotion stack up|down|status|install`` commands wrap these):

* :func:`install` — system packages (apt, only when missing) and the Kafka jars (Maven).
* :func:`up` — start the components in dependency order, each detached, and wait until each
  answers a real health check; idempotent.
* :func:`down` — stop them in reverse order (SIGTERM, then SIGKILL).
* :func:`status` — per component: pid, running, healthy, ports, memory, log file.

Everything a stack writes lives under ``settings.run_dir`` (configs, data, ``pids/``, ``logs/``);
jars and the Triton backend folder under ``settings.home``.  Two stacks with different
``stack_name``/``home`` and ports run side by side.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import Settings

from . import process
from .component import Component, ComponentStatus
from .kafka import Kafka, ensure_kafka_jars
from .prometheus import Prometheus
from .redis import Redis
from .triton import Triton

log = logging.getLogger(__name__)

COMPONENTS: dict[str, type[Component]] = {"kafka": Kafka, "redis": Redis, "triton": Triton, "prometheus": Prometheus}
"""Start order; :func:`down` uses the reverse."""

INSTALL_SCRIPT = Path(__file__).resolve().parent / "install-system.sh"

StackError = process.StackError
PortInUseError = process.PortInUseError


@dataclass
class StackStatus:
    """The state of every component of one stack."""

    stack_name: str
    components: list[ComponentStatus] = field(default_factory=list)

    @property
    def all_running(self) -> bool:
        return bool(self.components) and all(c.running for c in self.components)

    @property
    def all_healthy(self) -> bool:
        return bool(self.components) and all(c.healthy for c in self.components)

    @property
    def total_rss_mb(self) -> float:
        return round(sum(c.rss_mb or 0.0 for c in self.components), 1)

    def get(self, name: str) -> ComponentStatus:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def as_dict(self) -> dict[str, object]:
        return {
            "stack_name": self.stack_name,
            "all_healthy": self.all_healthy,
            "total_rss_mb": self.total_rss_mb,
            "components": {c.name: c.as_dict() for c in self.components},
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def table(self) -> str:
        """A fixed-width text table, one row per component, then the total memory."""
        header = ("component", "state", "pid", "ports", "rss MB", "log")
        rows = [header]
        for c in self.components:
            state = "healthy" if c.healthy else ("UNHEALTHY" if c.running else "stopped")
            ports = ",".join(f"{k}={v}" for k, v in c.ports.items())
            rss = f"{c.rss_mb:.0f}" if c.rss_mb is not None else "-"
            rows.append((c.name, state, str(c.pid or "-"), ports, rss, c.log_path))
        rows.append(("total", "", "", "", f"{self.total_rss_mb:.0f}", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"stack {self.stack_name}\n" + "\n".join(lines)


def isolated(settings: Settings, stack_name: str, home: Path | None = None) -> Settings:
    """Settings for another stack beside ``settings``' own: ``stack_name``, free ports for every
    component, and ``home`` when given (the model bundle stays the one ``settings`` uses, so no
    second stack rebuilds models).  The benchmark and the integration tests run on such stacks."""
    s = Settings(**settings.model_dump())
    s.stack_name = stack_name
    if home is not None:
        s.home = Path(home)
        s.models.dir = settings.models_dir
    free = process.free_port
    s.kafka.port, s.kafka.controller_port = free(s.kafka.host), free(s.kafka.host)
    s.redis.port = free(s.redis.host)
    s.triton.http_port, s.triton.grpc_port, s.triton.metrics_port = (
        free(s.triton.host),
        free(s.triton.host),
        free(s.triton.host),
    )
    s.prometheus.port = free(s.prometheus.host)
    return s


def _select(settings: Settings, components: Iterable[str] | None) -> list[Component]:
    names = list(COMPONENTS) if components is None else list(components)
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}")
    return [cls(settings) for name, cls in COMPONENTS.items() if name in names]


def up(settings: Settings, components: Sequence[str] | None = None, timeout_s: float = 300) -> StackStatus:
    """Start the stack (or the named ``components``) and wait until every part is healthy.

    Components start in the order kafka, redis, triton, prometheus, each as a detached process
    (own session) with its log in ``settings.log_dir/<name>.log`` and pid file in
    ``settings.run_dir/pids/``.  A component that already runs healthy is left alone, so a second
    call is a quick no-op.  ``timeout_s`` bounds the whole call; Triton also has its own
    ``settings.triton.startup_timeout_s``.

    Raises :class:`PortInUseError` when a port is taken by some other process, and
    :class:`StackError` (with the last lines of the component's log) when a component exits or is
    not ready in time; components started before it keep running.
    """
    selected = _select(settings, components)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    deadline = t_all + timeout_s
    for comp in selected:
        t0 = time.monotonic()
        remaining = deadline - t0
        if remaining <= 0:
            raise StackError(f"stack up: timed out after {timeout_s:.0f}s before starting {comp.name}")
        outcome = comp.up(timeout_s=remaining)
        elapsed = time.monotonic() - t0
        log.info(
            "%s: %s (%.1fs)",
            comp.name,
            outcome,
            elapsed,
            extra={
                "component": comp.name,
                "outcome": outcome,
                "elapsed_s": round(elapsed, 2),
                "stack": settings.stack_name,
            },
        )
    total = time.monotonic() - t_all
    log.info(
        "stack %s up in %.1fs",
        settings.stack_name,
        total,
        extra={"stack": settings.stack_name, "elapsed_s": round(total, 2)},
    )
    return status(settings, components)


def down(settings: Settings, components: Sequence[str] | None = None) -> StackStatus:
    """Stop the stack (or the named ``components``) in reverse start order.

    Each process group gets SIGTERM, then SIGKILL after the component's grace period; pid files
    are removed.  Returns the status afterwards (everything stopped).
    """
    selected = _select(settings, components)
    for comp in reversed(selected):
        if not comp.down():
            log.info("%s: not running", comp.name, extra={"component": comp.name, "stack": settings.stack_name})
    return status(settings, components)


def status(settings: Settings, components: Sequence[str] | None = None) -> StackStatus:
    """Per component: running (pid alive), healthy (real round trip), pid, ports, RSS, log path."""
    return StackStatus(settings.stack_name, [comp.status() for comp in _select(settings, components)])


def install(settings: Settings, *, system: bool = True) -> Path:
    """Install what the stack needs outside the virtual environment; idempotent.

    ``system``: run ``install-system.sh`` (apt: redis-server, prometheus, espeak-ng, sox,
    libsndfile1, Java, Maven — ``apt-get update`` only when one is missing, nothing at all when
    all are present).  Then fetch the Kafka jars with Maven (no-op when present).  Returns the jar
    folder.
    """
    if system:
        t0 = time.monotonic()
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            raise StackError(f"{INSTALL_SCRIPT.name} failed (exit {done.returncode}):\n{output[-4000:]}")
        log.info("system packages: %s (%.1fs)", output.splitlines()[-1] if output else "ok", time.monotonic() - t0)
    t0 = time.monotonic()
    jars = ensure_kafka_jars(settings)
    log.info(
        "kafka jars in %s (%.1fs)", jars, time.monotonic() - t0, extra={"elapsed_s": round(time.monotonic() - t0, 2)}
    )
    return jars
