"""Redis: the feature/audio cache, Debian's ``redis-server`` with a generated config.

Password-protected (``requirepass`` = ``settings.redis_password``), bound to
``settings.redis.host``, LRU-evicting at ``settings.redis.maxmemory``, no persistence.  Ready when
an authenticated ``PING`` succeeds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.files import write_text_atomic

from . import process
from .component import Component


def _quote(value: object) -> str:
    """A redis.conf string literal."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class Redis(Component):
    name = "redis"
    stop_timeout_s = 15.0
    probe_interval_s = 0.1

    @property
    def host(self) -> str:
        return self.settings.redis.host

    def ports(self) -> dict[str, int]:
        return {"client": self.settings.redis.port}

    @property
    def config_file(self) -> Path:
        return self.workdir / "redis.conf"

    def prepare(self) -> None:
        r = self.settings.redis
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        text = process.render_template(
            "redis.conf.tmpl",
            {
                "host": r.host,
                "port": r.port,
                "password": _quote(self.settings.redis_password),
                "logfile": _quote(self.log_file),
                "dir": _quote(data),
                "maxmemory": r.maxmemory,
            },
        )
        write_text_atomic(self.config_file, text, mode=0o600)

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise process.StackError("redis-server is not installed: run deploy/local/install-system.sh")
        return [binary, str(self.config_file)]

    def healthy(self) -> bool:
        """An authenticated PING."""
        import redis

        r = self.settings.redis
        client = redis.Redis(
            host=r.host,
            port=r.port,
            password=self.settings.redis_password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
