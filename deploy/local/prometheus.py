"""Prometheus: Debian's ``/usr/bin/prometheus`` run directly (not the systemd service).

Scrapes itself, Triton's metrics port, and every streaming service that registered a target file
in ``<run_dir>/prometheus/targets/`` (``file_sd_configs``, re-read every couple of seconds).
Services call :func:`register_scrape_target` when their metrics endpoint is up and
:func:`unregister_scrape_target` when they stop.  Ready when ``/-/ready`` answers 200.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from shared.settings import Settings

from . import process
from .component import Component


def targets_dir(settings: Settings) -> Path:
    """Folder of the ``file_sd_configs`` target files of this stack."""
    return settings.run_dir / "prometheus" / "targets"


def _duration(seconds: float) -> str:
    """A Prometheus duration (``2s``, ``2500ms``)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def register_scrape_target(
    settings: Settings, service: str, instance_id: str, port: int, host: str | None = None
) -> Path:
    """Make Prometheus scrape ``host:port`` (``/metrics``) as ``service`` / ``instance_id``.

    Writes ``<run_dir>/prometheus/targets/<service>-<instance_id>.json`` atomically (Prometheus
    never reads half a file) and returns its path for :func:`unregister_scrape_target`.
    Prometheus picks it up within its file-SD refresh interval, whether it runs yet or not.
    """
    addr = host or settings.runtime.metrics_host
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{service}-{instance_id}")
    path = targets_dir(settings) / f"{safe}.json"
    body = [{"targets": [f"{addr}:{port}"], "labels": {"service": service, "instance_id": instance_id}}]
    process.write_text_atomic(path, json.dumps(body, indent=2) + "\n")
    return path


def unregister_scrape_target(path: Path) -> None:
    """Remove a target file written by :func:`register_scrape_target` (missing is fine)."""
    Path(path).unlink(missing_ok=True)


class FileScrapeTargets:
    """The local stack's :class:`shared.runtime.ScrapeTargets`: a target file per instance in
    Prometheus's file-based discovery folder (:func:`register_scrape_target`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def register(self, service: str, instance_id: str, port: int) -> Path:
        return register_scrape_target(self.settings, service, instance_id, port)

    def unregister(self, target: Path) -> None:
        unregister_scrape_target(target)


class Prometheus(Component):
    name = "prometheus"
    stop_timeout_s = 20.0

    @property
    def host(self) -> str:
        return self.settings.prometheus.host

    def ports(self) -> dict[str, int]:
        return {"web": self.settings.prometheus.port}

    @property
    def config_file(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def url(self) -> str:
        p = self.settings.prometheus
        return f"http://{p.host}:{p.port}"

    def prepare(self) -> None:
        s = self.settings
        p, t = s.prometheus, s.triton
        targets_dir(s).mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        values = {
            "scrape_interval": _duration(p.scrape_interval_s),
            "scrape_timeout": _duration(min(p.scrape_interval_s, 10.0)),
            "refresh_interval": _duration(min(p.scrape_interval_s, 2.0)),
            "stack_name": s.stack_name,
            "prometheus_target": f"{p.host}:{p.port}",
            "triton_target": f"{t.host}:{t.metrics_port}",
            "targets_glob": str(targets_dir(s) / "*.json"),
        }
        process.write_text_atomic(self.config_file, process.render_template("prometheus.yml.tmpl", values))

    def command(self) -> list[str]:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise process.StackError("prometheus is not installed: run deploy/local/install-system.sh")
        p = self.settings.prometheus
        return [
            binary,
            f"--config.file={self.config_file}",
            f"--web.listen-address={p.host}:{p.port}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--storage.tsdb.retention.time={p.retention}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2.0) as resp:
                return bool(resp.status == 200)
        except urllib.error.URLError:
            return False
