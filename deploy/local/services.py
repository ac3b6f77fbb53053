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

    def __init__(
        self,
        settings: Settings,
        names: tuple[str, ...] = PIPELINE,
        instances: dict[str, int] | None = None,
        group_prefix: str | None = None,
    ):
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
        for name in self.names:
            for i in range(self.instances.get(name, 1)):
                self.processes.append(self._spawn(name, i))
        self._wait_ready(self.processes, timeout_s)

    def _spawn(self, name: str, instance: int) -> ServiceProcess:
        log_path = self.settings.log_dir / f"{name}-{instance}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        ready = self.settings.run_dir / "services" / f"{name}-{instance}.ready"
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "emotion.cli", "serve", name, "--ready-file", str(ready)]
        if self.group_prefix:
            cmd += ["--group", f"{self.group_prefix}-{name}"]
        env = {**os.environ, **settings_env(self.settings)}
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        log.info("started %s#%d (pid %d), log %s", name, instance, proc.pid, log_path)
        return ServiceProcess(name, instance, proc, log_path, ready)

    def _wait_ready(self, processes: list[ServiceProcess], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(p.ready() for p in processes):
            self.check()
            if time.monotonic() > deadline:
                waiting = [p.label for p in processes if not p.ready()]
                self.stop()
                raise StackError(f"services not consuming after {timeout_s:.0f} s: {', '.join(waiting)}")
            time.sleep(0.2)

    def get(self, name: str, instance: int = 0) -> ServiceProcess:
        for p in self.processes:
            if (p.name, p.instance) == (name, instance):
                return p
        raise KeyError(f"{name}#{instance} is not running")

    def kill(self, name: str, instance: int = 0) -> None:
        """SIGKILL one instance (no shutdown of any kind: a crash, an OOM kill, a lost node)."""
        process = self.get(name, instance)
        os.killpg(process.proc.pid, signal.SIGKILL)
        process.proc.wait()
        process.ready_file.unlink(missing_ok=True)
        self.processes.remove(process)
        log.info("killed %s (pid %d) with SIGKILL", process.label, process.proc.pid)

    def respawn(self, name: str, instance: int = 0, timeout_s: float = 300.0) -> ServiceProcess:
        """Start an instance that is not running again and wait until it consumes."""
        if any((p.name, p.instance) == (name, instance) for p in self.processes):
            raise ValueError(f"{name}#{instance} is running")
        process = self._spawn(name, instance)
        self.processes.append(process)
        self._wait_ready([process], timeout_s)
        return process

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
