"""The README's run command, ``emotion demo``, as a fresh machine runs it (only the model bundle is
shared): it serves the shipped default model without training (there is none in its new home),
brings the stack up, starts the five services and the dashboard, streams two generated calls,
prints one JSON event per utterance, exits 0 and leaves nothing running. Then the other ways a
user runs it: their own audio files and a manifest together (the event table and the per-call
summary)."""

from __future__ import annotations

import json
import os
import re
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
        [
            sys.executable,
            "-m",
            "emotion.cli",
            "demo",
            "--calls",
            "2",
            "--json",
            "--no-progress",
            "--dashboard-port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
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


def _stopped(s) -> None:
    for port in (s.kafka.port, s.redis.port, s.triton.grpc_port, s.prometheus.port):
        assert not _listening(port), f"port {port} still open after the demo"


@pytest.mark.timeout(1500)
def test_demo_with_audio_files_and_a_manifest_prints_the_table_and_the_summary(tmp_path_factory, tmp_path):
    from training.data.calls import generate_calls

    s = isolated_settings(tmp_path_factory, "itest-demo-files")
    s.triton.startup_timeout_s = 480.0
    first, second = generate_calls(tmp_path / "calls", 2, seed=21, utterances_per_call=(2, 3), progress=False)
    manifest = tmp_path / "calls.jsonl"
    manifest.write_text(
        json.dumps({"audio": str(second.path), "call_id": "manifest-call", "language": second.language}) + "\n"
    )
    env = {**os.environ, **settings_env(s)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion.cli",
            "demo",
            str(first.path),
            "--manifest",
            str(manifest),
            "--no-progress",
            "--dashboard-port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-5000:]
    assert "2 calls, " in out and " emotion events in " in out, out[-3000:]
    n_events = int(re.search(r"2 calls, (\d+) emotion events", out).group(1))
    assert n_events >= len(first.turns) + len(second.turns) - 2  # the segmenter may join or split a turn or two
    # the live table: a row per event, each naming its call and a label of the model
    rows = [line for line in out.splitlines() if first.call_id in line or "manifest-call" in line]
    assert sum(first.call_id in r for r in rows) >= 2 and sum("manifest-call" in r for r in rows) >= 2, out[-3000:]
    # the summary after the table: a block per call (its utterances, the escalation verdict), then the count
    counts = {call: int(n) for call, n in re.findall(r"^(\S+)  (\d+) utterance\(s\)  ", out, flags=re.M)}
    called = {re.sub(r"-\d{6}$", "", call) for call in counts}  # the demo stamps each run's call ids with the time
    assert called == {first.call_id, "manifest-call"} and sum(counts.values()) == n_events, out[-3000:]
    assert re.search(r"^2 call\(s\), \d+ escalated$", out, flags=re.M)
    _stopped(s)


def _processes_of(home) -> list[str]:
    """Command lines of the running processes that name the run home (services, servers)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmdline:
            found.append(f"{pid}: {cmdline[:200]}")
    return found


@pytest.mark.timeout(1500)
def test_ctrl_c_in_live_mode_stops_everything(tmp_path_factory):
    """`emotion demo` without --calls streams calls until Ctrl-C: after the first event, SIGINT to
    its process group (what a terminal's Ctrl-C sends) ends it with 130, every process it started
    is gone and every port closed."""
    import signal
    import threading
    import time

    s = isolated_settings(tmp_path_factory, "itest-demo-sigint")
    s.triton.startup_timeout_s = 480.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion", "demo", "--json", "--no-progress", "--dashboard-port", "0"],
        env={**os.environ, **settings_env(s)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell's foreground job
    )
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    drain.start()
    try:
        first = None
        deadline = time.monotonic() + 1200
        while first is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            if line.startswith("{"):
                first = json.loads(line)
        assert first is not None, "no event before the deadline:\n" + "".join(stderr)[-5000:]
        assert first["contract"] == "emotion_event" and first["call_id"].startswith("demo-")
        assert _processes_of(s.home), "the stack and the services run under the demo's home"
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drain.join(10)
    assert rc == 130, "".join(stderr)[-5000:]
    assert "stopping (Ctrl-C)" in "".join(stderr)
    assert _processes_of(s.home) == [], "left running after Ctrl-C"
    _stopped(s)
