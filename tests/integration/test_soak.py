"""``emotion soak`` end to end, shortened: one call line for 20 s, on a stack of its own.

A smoke run of the soak script (the 10-minute run is a command, its figures in
docs/reliability.md): the stack comes up, the line streams, lag and memory are sampled, the
pipeline drains, every utterance is answered, and the report and plot are written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
"""Above the soak subprocess's own 1200 s limit, which then reports first, with its output."""


def test_a_short_soak_passes_its_checks_and_writes_its_report(tmp_path_factory):
    s = isolated_settings(tmp_path_factory, "soak-test")
    out = tmp_path_factory.mktemp("soak-results")
    env = {**os.environ, "EMOTION_HOME": str(s.home), "EMOTION_MODELS__DIR": str(s.models_dir)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion.cli",
            "soak",
            "--calls",
            "1",
            "--minutes",
            "0.33",
            "--turns",
            "2",
            "3",
            "--interval",
            "2",
            "--results",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    [report] = out.glob("soak-*.json")
    result = json.loads(report.read_text())
    assert result["call_count"] >= 1 and result["utterances"] > 0 and result["events"] == result["utterances"]
    verdicts = result["verdicts"]
    assert verdicts["lag"]["ok"] and verdicts["answers"]["ok"]
    assert verdicts["memory"]["ok"] is None, "20 s is too short to judge memory: not judged, not passed"
    assert len(result["lag_series"]) >= 5 and "asr_alignment" in result["lag_series"][-1][1]
    assert {"kafka", "redis", "triton", "asr_alignment#0"} <= set(result["rss_series"])
    assert report.with_suffix(".png").stat().st_size > 10_000
    assert "every utterance answered" in report.with_suffix(".md").read_text()
