"""The README's run command, ``emotion demo``, as a fresh machine runs it (only the model bundle is
shared): it serves the shipped default model without training (there is none in its new home),
brings the stack up, starts the five services and the dashboard, streams two generated calls,
prints one JSON event per utterance, exits 0 and leaves nothing running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from shared.settings import settings_env
from training.checkpoint import model_version
from training.train import SHIPPED_MODEL
from tests.integration.conftest import isolated_settings

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(1500)  # stack and Triton start-up, two calls
def test_demo_with_calls_runs_end_to_end_and_shuts_down(tmp_path_factory):
    s = isolated_settings(tmp_path_factory, "itest-demo")
    s.triton.startup_timeout_s = 480.0
    env = {**os.environ, **settings_env(s)}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--calls", "2", "--json", "--no-progress", "--dashboard-port", "0"],
        env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert events, done.stdout[-3000:]
    assert len({e["call_id"] for e in events}) == 2
    assert len({e["utterance_id"] for e in events}) == len(events), "an utterance was printed twice"
    for e in events:
        assert e["contract"] == "emotion_event" and e["label"] in e["probabilities"]
        assert abs(sum(e["probabilities"].values()) - 1) < 1e-3
    shipped = model_version(SHIPPED_MODEL)  # served as shipped: copied, not trained
    assert model_version(s.default_model_dir) == shipped and (s.default_model_dir / "MODEL_CARD.md").is_file()
    assert {e["model_version"] for e in events} == {shipped}
    assert not (s.home / "features").exists() and not (s.home / "corpora").exists(), "the demo trained a model"
    assert "dashboard: http://127.0.0.1:" in done.stdout + done.stderr
    for port in (s.kafka.port, s.redis.port, s.triton.grpc_port, s.prometheus.port):
        assert not _listening(port), f"port {port} still open after the demo"
