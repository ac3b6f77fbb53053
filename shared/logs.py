"""Structured logging for every process: one line per event, JSON or human-readable text."""

from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str | None = None):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            event["service"] = self.service
        event.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text", service: str | None = None) -> None:
    """Route every logger to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        prefix = f"{service} " if service else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # kafka-python warns on every SCRAM login over SASL_PLAINTEXT; SCRAM sends a salted proof, never
    # the password (docs/reliability.md says when to add TLS), so the warning is only noise
    logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)
