"""Fixtures shared by the unit tests that need a real redis-server (installed by scripts/setup.sh)."""

import shutil
import socket
import subprocess
import time

import pytest

from deploy.local.process import free_port

REDIS_PASSWORD = "unit-test-password"


@pytest.fixture(scope="module")
def redis_port():
    """A throw-away redis-server on a free port (no persistence, password ``REDIS_PASSWORD``)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)
