"""The five streaming services as local processes: ``emotion serve NAME``, the command a container runs.

:class:`ServiceProcesses` starts them (several instances of one service share its consumer group
and split the partitions), waits until each consumes (its ``--ready-file``), reports an exit with
the tail of its log, and stops them with SIGTERM (the runtime finishes its batch, commits and
deregisters from Prometheus) before it kills anything.  Used by ``emotion demo`` and the
end-to-end tests.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.local.process import StackError, tail
from shared.settings import Settings, settings_env

log = logging.getLogger(__name__)

PIPELINE: tuple[str, ...] = ("asr_alignment", "text_encoder", "speech_encoder", "graph_gat", "moe_fusion")
"""Every service, upstream first: calls.audio -> utterances -> features.{text,speech} -> features.graph -> emotions."""


@dataclass
class ServiceProcess:
    name: str
    instance: int
    proc: subprocess.Popen
    log_path: Path
    ready_file: Path

    @property
    def label(self) -> str:
        return f"{self.name}#{self.instance}"

    def ready(self) -> bool:
        return self.ready_file.is_file()

    def failure(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        return f"{self.label} exited with {code}; last lines of {self.log_path}:\n{tail(self.log_path, 30)}"


class ServiceProcesses:
    """Start, watch and stop the pipeline's service processes."""

    def __init__(self, settings: Settings, names: tuple[str, ...] = PIPELINE, instances: dict[str, int] | None = None,
                 group_prefix: str | None = None):  # fmt: skip
        unknown = set(names) - set(PIPELINE)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {', '.join(PIPELINE)}")
        self.settings = settings
        self.names = names
        self.instances = instances or {}
        self.group_prefix = group_prefix
        self.processes: list[ServiceProcess] = []

    def start(self, timeout_s: float = 300.0) -> None:
        """Start every instance and wait until all consume; raises :class:`StackError` otherwise."""
        log_dir = self.settings.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(self.settings)}
        for name in self.names:
            for i in range(self.instances.get(name, 1)):
                log_path = log_dir / f"{name}-{i}.log"
                ready = self.settings.run_dir / "services" / f"{name}-{i}.ready"
                ready.parent.mkdir(parents=True, exist_ok=True)
                ready.unlink(missing_ok=True)
                cmd = [sys.executable, "-m", "services.cli", "serve", name, "--ready-file", str(ready)]
                if self.group_prefix:
                    cmd += ["--group", f"{self.group_prefix}-{name}"]
                with open(log_path, "ab") as fh:
                    proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
                self.processes.append(ServiceProcess(name, i, proc, log_path, ready))
                log.info("started %s (pid %d), log %s", self.processes[-1].label, proc.pid, log_path)
        deadline = time.monotonic() + timeout_s
        while not all(p.ready() for p in self.processes):
            self.check()
            if time.monotonic() > deadline:
                waiting = [p.label for p in self.processes if not p.ready()]
                self.stop()
                raise StackError(f"services not consuming after {timeout_s:.0f} s: {', '.join(waiting)}")
            time.sleep(0.2)

    def check(self) -> None:
        """Raise :class:`StackError` (with its log tail) if a service process has exited."""
        for p in self.processes:
            failure = p.failure()
            if failure:
                self.stop()
                raise StackError(failure)

    def stop_one(self, process: ServiceProcess, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if process.proc.poll() is None:
            process.proc.send_signal(signal.SIGTERM)
            try:
                process.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", process.label, timeout_s)
                os.killpg(process.proc.pid, signal.SIGKILL)
                process.proc.wait()
        process.ready_file.unlink(missing_ok=True)
        return process.proc.returncode

    def stop(self, timeout_s: float = 30.0) -> dict[str, int]:
        """SIGTERM every instance at once, then wait; returns each one's exit code."""
        for p in self.processes:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        codes = {p.label: self.stop_one(p, timeout_s) for p in self.processes}
        self.processes.clear()
        return codes

    def __enter__(self) -> ServiceProcesses:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
