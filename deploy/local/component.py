"""The life cycle that every local-stack component shares.

A component (Kafka, Redis, Triton, Prometheus) only says *what* to run: its ports, how to write
its configuration, its command line and environment, and a real health probe.  This base class
does the rest the same way for all of them: port checks, detached start, pid files, waiting for
readiness with the log's tail on failure, stop, and status with memory figures.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.settings import Settings

from . import process

log = logging.getLogger(__name__)


@dataclass
class ComponentStatus:
    """One component's state as :func:`deploy.local.stack.status` reports it."""

    name: str
    running: bool
    healthy: bool
    pid: int | None
    ports: dict[str, int]
    rss_mb: float | None
    log_path: str
    detail: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Component(ABC):
    """A detached server process of the local stack, configured from :class:`Settings`."""

    name: str = ""
    stop_timeout_s: float = 20.0
    """SIGTERM grace period before SIGKILL."""
    probe_interval_s: float = 0.25

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # ---- what subclasses define ----------------------------------------------------------
    @property
    @abstractmethod
    def host(self) -> str:
        """Address the component binds to."""

    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Every port the component binds, by label (shown in errors and status)."""

    @abstractmethod
    def prepare(self) -> None:
        """Create directories and write the generated configuration (idempotent)."""

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    def env(self) -> dict[str, str] | None:
        """Environment of the server process (None: inherit the caller's)."""
        return None

    @abstractmethod
    def healthy(self) -> bool:
        """A real round trip with the server (not an open port); must return within seconds."""

    def after_ready(self) -> None:
        """Runs after every successful :meth:`up` (also when already running); idempotent."""

    @property
    def startup_timeout_s(self) -> float:
        return 120.0

    # ---- shared life cycle ---------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """Generated configuration and data of this component."""
        return self.settings.run_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.settings.run_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The live server's pid, or None."""
        return process.read_live_pid(self.pid_file)

    def safe_healthy(self) -> bool:
        try:
            return bool(self.healthy())
        except Exception as exc:  # noqa: BLE001 - a failing probe is "not healthy"
            log.debug("%s health probe failed: %r", self.name, exc)
            return False

    def up(self, timeout_s: float | None = None) -> str:
        """Start the component unless it already runs; wait until healthy.

        Returns what was done: ``"started"``, ``"already running"`` or ``"was starting"``.
        Raises :class:`process.StackError` (with the log's tail) when it does not become ready,
        :class:`process.PortInUseError` when one of its ports is taken by another process.
        """
        timeout = min(timeout_s, self.startup_timeout_s) if timeout_s is not None else self.startup_timeout_s
        pid = self.pid()
        if pid is not None:
            record = process.PidRecord.read(self.pid_file)
            if self.safe_healthy():
                self.after_ready()
                return "already running"
            self._wait(record, timeout)
            self.after_ready()
            return "was starting"
        process.stop(self.pid_file, name=self.name, timeout_s=5)  # stale pid file, orphaned children
        process.check_ports_free(self.name, self.host, self.ports())
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        record = process.start_detached(
            self.command(), log_file=self.log_file, pid_file=self.pid_file, env=self.env(), cwd=self.workdir
        )
        log.info(
            "started %s (pid %d), waiting until ready",
            self.name,
            record.pid,
            extra={"component": self.name, "pid": record.pid},
        )
        try:
            self._wait(record, timeout)
        except process.StackError:
            process.stop(self.pid_file, name=self.name, timeout_s=5)
            raise
        self.after_ready()
        return "started"

    def _wait(self, record: process.PidRecord | None, timeout_s: float) -> float:
        return process.wait_ready(
            self.name,
            self.healthy,
            timeout_s=timeout_s,
            record=record,
            log_file=self.log_file,
            interval_s=self.probe_interval_s,
        )

    def down(self) -> bool:
        """Stop the component (SIGTERM, then SIGKILL); True when it was running."""
        return process.stop(self.pid_file, name=self.name, timeout_s=self.stop_timeout_s)

    def status(self) -> ComponentStatus:
        pid = self.pid()
        running = pid is not None
        t0 = time.monotonic()
        healthy = running and self.safe_healthy()
        return ComponentStatus(
            name=self.name,
            running=running,
            healthy=healthy,
            pid=pid,
            ports=self.ports(),
            rss_mb=process.rss_mb(pid) if pid is not None else None,
            log_path=str(self.log_file),
            detail=f"probe {1000 * (time.monotonic() - t0):.0f} ms" if running else "not running",
        )
