"""``emotion dashboard --synthetic-traffic`` as a user runs it on the real stack: the page's API shows
every service's fake throughput and the scripted calls; Ctrl-C (SIGINT) stops it with exit 0, its
port closed and its Prometheus target files removed.  A module of its own: its scripted calls
reach the stack's emotions topic, which test_dashboard_stack.py counts exactly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from deploy.local.process import free_port
from shared.metrics import scrape_targets_dir
from shared.settings import PROJECT_ROOT, settings_env
from tests.integration.browser import get_json, scraped, wait_for

pytestmark = pytest.mark.integration

FIVE = {"asr_alignment", "text_encoder", "speech_encoder", "graph_gat", "moe_fusion"}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_synthetic_traffic_moves_the_dashboard_and_ctrl_c_stops_everything(stack_settings, tmp_path):
    s = stack_settings
    port = free_port()
    before = set(scrape_targets_dir(s).glob("*.json"))
    log = (tmp_path / "dashboard.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion", "dashboard", "--synthetic-traffic", "--port", str(port), "--backlog", "0"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings_env(s)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the dashboard", lambda: _port_open(port) and get_json(url + "/healthz")["events"]["assigned"], 120)
        # the fake services register after the dashboard (and its event reader) is up: wait for them
        wait_for("five target files", lambda: len(set(scrape_targets_dir(s).glob("*.json")) - before) >= 5, 60)
        targets = set(scrape_targets_dir(s).glob("*.json")) - before
        labels = [json.loads(t.read_text())[0]["labels"] for t in targets]
        assert {label["service"] for label in labels} == FIVE, labels
        instance_ids = [label["instance_id"] for label in labels]
        wait_for("all five scraped", lambda: scraped(url, instance_ids), 60)

        def throughput():
            res = get_json(url + "/api/query?q=throughput")["data"]["result"]
            rates = {r["metric"]["service"]: float(r["value"][1]) for r in res}
            return rates if all(rates.get(name, 0) > 0 for name in FIVE) else None

        wait_for("non-zero throughput of all five fake services", throughput, 120)

        def scripted_calls():
            calls = [c for c in get_json(url + "/api/calls")["calls"] if c["call_id"].startswith("call-")]
            return calls if len(calls) >= 2 else None

        calls = wait_for("two scripted calls in /api/calls", scripted_calls, 60)
        assert all(c["utterances"] and all(u["label"] for u in c["utterances"]) for c in calls)
        assert any(c["escalated"] for c in calls), "the first script (ESCALATING) escalates"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    output = log.read()
    assert "synthetic traffic for stack" in output and "Traceback" not in output, output[-3000:]
    assert not _port_open(port), "the dashboard's port is still open after Ctrl-C"
    assert set(scrape_targets_dir(s).glob("*.json")) - before == set(), "target files left behind"
