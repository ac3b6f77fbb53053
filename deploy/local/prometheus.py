"""Prometheus: Debian's ``/usr/bin/prometheus`` run directly (not the systemd service).

Scrapes itself, Triton's metrics port, and every streaming service that registered a target file
in ``<run_dir>/prometheus/targets/`` (``file_sd_configs``, re-read every couple of seconds).
Services write and remove those files themselves (:class:`shared.metrics.FileScrapeTargets`,
Prometheus's file-based discovery).  Ready when ``/-/ready`` answers 200.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from shared.files import write_text_atomic
from shared.metrics import scrape_targets_dir

from . import process
from .component import Component


def _duration(seconds: float) -> str:
    """A Prometheus duration (``2s``, ``2500ms``)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


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
        scrape_targets_dir(s).mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        values = {
            "scrape_interval": _duration(p.scrape_interval_s),
            "scrape_timeout": _duration(min(p.scrape_interval_s, 10.0)),
            "refresh_interval": _duration(min(p.scrape_interval_s, 2.0)),
            "stack_name": s.stack_name,
            "prometheus_target": f"{p.host}:{p.port}",
            "triton_target": f"{t.host}:{t.metrics_port}",
            "targets_glob": str(scrape_targets_dir(s) / "*.json"),
        }
        write_text_atomic(self.config_file, process.render_template("prometheus.yml.tmpl", values))

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
