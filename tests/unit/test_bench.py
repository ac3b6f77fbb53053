"""The benchmark's own arithmetic: chunk timing, percentiles, process accounting, ratios, targets, report."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import report
from benchmarks.monitor import ProcessSampler, _STUB_MODEL, role
from benchmarks.pipeline import Timeline, percentiles, triton_delta


def test_an_instant_of_a_call_maps_to_the_send_time_of_the_chunk_holding_it():
    # 8 kHz, 200 ms chunks of 1600 frames; chunk k sent at 100 + k
    t = Timeline({"c": 8000}, {"c": [100.0 + k for k in range(5)]})
    assert t.wall_time("c", 0.0) == 100.0  # the first sample is in chunk 0
    assert t.wall_time("c", 0.1999) == 100.0
    assert t.wall_time("c", 0.2) == 100.0  # the 1600th frame ends chunk 0
    assert t.wall_time("c", 0.2001) == 101.0
    assert t.wall_time("c", 0.95) == 104.0
    assert t.wall_time("c", 30.0) == 104.0  # past the end: the last chunk


def test_percentiles():
    p = percentiles(list(range(1, 101)))
    assert p["n"] == 100 and p["p50"] == pytest.approx(50.5) and p["p95"] == pytest.approx(95.05)
    assert p["max"] == 100 and p["mean"] == pytest.approx(50.5)
    assert percentiles([]) == {"n": 0}


def test_triton_statistics_deltas_per_request_and_execution():
    before = {"asr": {"requests": 10, "executions": 10, "inferences": 10, "queue_ns": 0, "compute_ns": 10_000_000_000}}
    after = {
        "asr": {
            "requests": 14,
            "executions": 12,
            "inferences": 16,
            "queue_ns": 8_000_000,
            "compute_ns": 14_000_000_000,
        },
        "idle": {"requests": 3, "executions": 3, "inferences": 3, "queue_ns": 0, "compute_ns": 0},
    }
    d = triton_delta(before, after)
    assert d["asr"] == {"requests": 4, "rows_per_execution": 3.0, "queue_ms": 2.0, "compute_ms_per_execution": 2000.0}
    assert d["idle"]["requests"] == 3  # a model the "before" did not know counts from zero


def test_the_process_sampler_measures_a_busy_child_and_not_an_idle_one():
    # the child burns 1.0 s of CPU time (not of wall time: on a loaded machine that would be less
    # CPU), says so, then idles; the sampler is stopped after that, however long it took
    code = "import sys, time\nwhile time.process_time() < 1.0: pass\nprint('burnt', flush=True)\ntime.sleep(60)"
    busy = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler = ProcessSampler({"busy#0": busy.pid, "idle#0": idle.pid}, interval_s=0.1).start()
        assert busy.stdout.readline().strip() == "burnt"
        time.sleep(0.3)  # a sample or more after the burn
        out = sampler.stop()
    finally:
        busy.kill(), idle.kill()
    assert 0.8 <= out["busy#0"]["cpu_s"] <= 1.6, out
    assert out["idle#0"]["cpu_s"] < 0.2, out
    assert out["busy#0"]["rss_mb_peak"] > 1
    # the two Pythons share their interpreter's pages: each one's PSS is below its RSS
    assert 1 < out["busy#0"]["pss_mb_peak"] < out["busy#0"]["rss_mb_peak"], out
    assert out["total"]["cpu_s"] == pytest.approx(out["busy#0"]["cpu_s"] + out["idle#0"]["cpu_s"], abs=0.02)


def test_triton_stub_processes_are_named_after_their_model():
    arg = "/srv/var/stacks/bench/model_repository/speech_encoder/3/model.py"
    assert _STUB_MODEL.search(arg).group(1) == "speech_encoder"
    assert _STUB_MODEL.search("/usr/bin/tritonserver") is None
    assert role("triton:asr#1") == "triton:asr" and role("graph_gat#0") == "graph_gat" and role("kafka") == "kafka"


def _run_result(calls, pace, throughput, p95, **extra):
    stages = {s: {"n": 1, "p50": 0.1, "p95": 0.2} for s in ("endpointing", "asr", "text")}
    return {
        "calls": calls,
        "pace": pace,
        "throughput_x": throughput,
        "rtf": 1 / throughput,
        "audio_s": 100.0,
        "wall_s": 100.0 / throughput,
        "latency_s": {"overall": {"n": 3, "p50": p95 / 2, "p95": p95, "p99": p95}, "stages": stages},
        "latencies_s": [0.5, 1.0, p95],
        "events": 3,
        "utterances": 3,
        "duplicate_events": 0,
        "lag": {"asr_alignment": {"max": 4, "mean": 1, "final": 0}},
        "lag_series": [(0.0, {"asr_alignment": 4})],
        "processes": {
            "triton:asr#0": {"cpu_s": 9.0, "cores": 0.9, "rss_mb_peak": 800, "rss_mb_mean": 700, "pss_mb_peak": 500},
            "kafka": {"cpu_s": 1.0, "cores": 0.1, "rss_mb_peak": 400, "rss_mb_mean": 400, "pss_mb_peak": 390},
            "moe_fusion#0": {"cpu_s": 1.0, "cores": 0.1, "rss_mb_peak": 100, "rss_mb_mean": 90, "pss_mb_peak": 60},
            "total": {"cpu_s": 11.0, "cores": 1.1, "rss_mb_peak": 1300, "rss_mb_mean": 1190, "pss_mb_peak": 950},
        },
        "cores_used": 0.9,
        "triton": {},
        "cache": {},
        "cache_hit_ratio": {"asr_alignment": 0.0},
        **extra,
    }


def results_fixture() -> dict:
    return {
        "started": "2026-12-01 10:00",
        "command": "emotion bench",
        "duration_s": 600.0,
        "machine": {"cpu": "test cpu", "cores": 2, "memory_gb": 24.0},
        "device": {"kind": "cpu", "name": "CPU, 2 cores", "tag": "cpu"},
        "workload": {"calls": 16, "turns": [5, 8], "seed": 0, "audio_s": 500.0},
        "model": {"version": "proposed@abc", "weights": "random"},
        "gpu": "not run",
        "ceilings": {
            "asr": [
                {"workers": 1, "threads": 2, "utterances": 9, "wall_s": 10.0, "throughput_x": 3.0},
                {"workers": 2, "threads": 1, "utterances": 9, "wall_s": 8.0, "throughput_x": 4.0},
            ],
            "chain": {"threads": 2, "utterances": 9, "wall_s": 20.0, "throughput_x": 2.0},
            "asr_full_window": {
                "workers": 2,
                "threads": 1,
                "window_s": 30.0,
                "utterances": 9,
                "wall_s": 26.7,
                "throughput_x": 1.2,
            },
            "asr_packed": {
                "workers": 2,
                "threads": 1,
                "packed": True,
                "utterances": 9,
                "wall_s": 2.5,
                "throughput_x": 12.8,
            },
            "asr_after": {"workers": 2, "threads": 1, "utterances": 9, "wall_s": 8.4, "throughput_x": 3.8},
            "drift": -0.05,
        },
        "asr_packing": {
            "prompts": 40,
            "audio_s": 160.0,
            "batch": 16,
            "wer_one_by_one": 0.0236,
            "wer_packed": 0.0276,
            "wall_one_by_one_s": 60.0,
            "wall_packed_s": 17.0,
            "speedup": 3.53,
            "differences": [],
            "asr": "whisper-base@x",
            "threads": 2,
            "window_s": 28.0,
            "gap_s": 0.6,
            "speech": "Asterisk",
            "synthetic_calls": {
                "prompts": 30,
                "audio_s": 120.0,
                "batch": 16,
                "wer_one_by_one": 0.1,
                "wer_packed": 0.12,
                "speedup": 1.2,
                "by_language": {
                    "en": {"utterances": 14, "wer_one_by_one": 0.05, "wer_packed": 0.06},
                    "ko": {
                        "utterances": 16,
                        "wer_one_by_one": 0.15,
                        "wer_packed": 0.18,
                        "cer_one_by_one": 0.08,
                        "cer_packed": 0.07,
                    },
                },
            },
        },
        "e2e": [
            _run_result(16, "fast", 3.6, 50.0),
            _run_result(4, "realtime", 1.0, 1.5),
            _run_result(4, "fast", 3.0, 9.0),
        ],
        "cache": {"cold": _run_result(16, "fast", 3.6, 50.0), "warm": _run_result(16, "fast", 18.0, 1.0)},
        "fusion": [
            {
                "model": "proposed",
                "threads": 1,
                "batch": 32,
                "ms_per_utterance": 1.5,
                "parameters": 2_000_000,
                "paper_ms_per_utterance": None,
            }
        ],
    }


def test_ratios_are_against_the_best_asr_split_and_the_chain():
    r = report.ratios(results_fixture())
    assert r["e2e_n16_vs_asr_ceiling"] == pytest.approx(0.9)  # 3.6 / max(3.0, 4.0)
    assert r["e2e_n16_vs_chain"] == pytest.approx(1.8)
    assert r["e2e_n16_vs_full_window_ceiling"] == pytest.approx(3.0)
    assert r["e2e_n4_vs_asr_ceiling"] == pytest.approx(0.75)
    assert r["latency_p95_n4_realtime_s"] == 1.5
    assert r["fusion_ms_per_utterance_batch32"] == 1.5
    assert r["cache_warm_vs_cold_throughput"] == pytest.approx(5.0)
    assert r["asr_packed_vs_one_by_one"] == pytest.approx(3.2)  # 12.8 / the best one-by-one split
    assert report.ratios({**results_fixture(), "ceilings": {"asr": []}})["asr_packed_vs_one_by_one"] is None


def test_targets_say_met_missed_or_not_measured():
    res = results_fixture()
    met = {t["field"]: t["met"] for t in report.targets(res)}
    assert met == {
        "e2e_n16_vs_asr_ceiling": True,
        "e2e_n16_vs_chain": True,
        "e2e_n16_vs_full_window_ceiling": True,  # 3.6 / 1.2 = 3.0
        "latency_p95_n4_realtime_s": True,
        "fusion_ms_per_utterance_batch32": True,
        "asr_packed_wer_delta": True,  # 0.0276 - 0.0236 = 0.004
    }
    res["e2e"][1]["latency_s"]["overall"]["p95"] = 2.5
    res["ceilings"]["asr"][1]["throughput_x"] = 5.0
    res["fusion"] = []
    res["asr_packing"]["wer_packed"] = 0.03
    met = {t["field"]: t["met"] for t in report.targets(res)}
    assert met["asr_packed_wer_delta"] is False
    res["asr_packing"] = {"skipped": "no Asterisk prompts"}
    assert {t["field"]: t["met"] for t in report.targets(res)}["asr_packed_wer_delta"] is None
    assert met["latency_p95_n4_realtime_s"] is False and met["e2e_n16_vs_asr_ceiling"] is False
    assert met["fusion_ms_per_utterance_batch32"] is None


def test_the_report_is_written_with_its_plots_and_can_be_rendered_again(tmp_path):
    res = results_fixture()
    paths = report.write(res, tmp_path, "cpu")
    names = {p.name for p in paths}
    assert {
        "cpu.json",
        "cpu.md",
        "latest.json",
        "latest.md",
        "cpu-throughput.png",
        "cpu-latency.png",
        "cpu-stages.png",
        "cpu-cpu.png",
        "cpu-lag.png",
    } <= names
    for p in paths:
        assert p.stat().st_size > 0
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["ratios"]["e2e_n16_vs_asr_ceiling"] == pytest.approx(0.9)
    assert [t["met"] for t in saved["targets"]] == [True, True, True, True, True, True]
    md = (tmp_path / "cpu.md").read_text()
    assert "| end-to-end throughput at N=16 / ASR-only ceiling | `e2e_n16_vs_asr_ceiling` | >= 0.8 | 0.90 | yes |" in md
    assert "![throughput](cpu-throughput.png)" in md
    assert "| one by one | 0.0236 | 60.00 |" in md and "| packed (3.53x faster) | 0.0276 | 17.00 |" in md
    assert "| ko | 16 | 0.1500 | 0.1800 | 0.0800 | 0.0700 |" in md
    assert "| all (1.20x faster packed) | 30 | 0.1000 | 0.1200 |  |  |" in md
    assert (
        "| bare faster-whisper, packed windows (up to 16 waiting utterances), 2 worker(s) x 1 thread(s) | 9 | 2.50 | 12.80 |"
        in md
    )
    assert "measured again after the stack was stopped: 3.80x (-5.0 %)" in md
    # the stack's memory: Kafka and Triton's model process, not the services
    assert "Triton and its 1 model processes), peak: RSS 1200 MB, PSS 890 MB" in md
    assert "| triton:asr#0 | 9.00 | 0.90 | 800 | 500 |" in md
    os.remove(tmp_path / "cpu.md")
    assert report.main(argparse.Namespace(results=tmp_path / "cpu.json", out_dir=None), None) == 0
    assert (tmp_path / "cpu.md").read_text() == md
    # a copy under another name renders under its own name, and latest.* stays the bench's
    (tmp_path / "cpu-window10.json").write_text((tmp_path / "cpu.json").read_text())
    latest = (tmp_path / "latest.md").stat().st_mtime_ns
    assert report.main(argparse.Namespace(results=tmp_path / "cpu-window10.json", out_dir=None), None) == 0
    assert (tmp_path / "cpu-window10.md").read_text() == md.replace("](cpu-", "](cpu-window10-")
    assert (tmp_path / "cpu-window10-throughput.png").exists()
    assert (tmp_path / "latest.md").stat().st_mtime_ns == latest
    assert "| bare faster-whisper, Whisper's own 30 s window for every utterance, 2 worker(s) x 1 thread(s) | 9 |" in md


# ---- soak ----------------------------------------------------------------------------------------


def _lags(asr: list[int]) -> list[tuple[float, dict[str, int]]]:
    """A sample every 30 s."""
    return [(30.0 * i, {"asr_alignment": v, "moe_fusion": 0}) for i, v in enumerate(asr)]


def test_redis_sizes_in_megabytes():
    from benchmarks.soak import _megabytes

    assert _megabytes("512mb") == 512 and _megabytes("1gb") == 1000 and _megabytes("2000000") == 2


def test_soak_lag_that_keeps_growing_is_not_bounded_and_a_steady_one_is():
    from benchmarks.soak import verdicts

    rss = {"triton": [900.0] * 10}
    steady = verdicts(_lags([3, 40, 12, 35, 20, 38, 15, 30, 5, 0]), rss, 4, 10, 10, 0, 32, 30.0)
    assert steady["lag"]["ok"] and steady["memory"]["ok"] and steady["answers"]["ok"]
    growing = verdicts(_lags([10, 60, 150, 260, 400, 560, 700, 880, 1000, 0]), rss, 4, 10, 10, 0, 32, 30.0)
    assert not growing["lag"]["ok"] and growing["lag"]["asr_second_half_max"] == 1000
    undrained = verdicts(_lags([3, 4, 3, 4, 3, 4, 3, 4, 3, 7]), rss, 4, 10, 10, 0, 32, 30.0)
    assert not undrained["lag"]["ok"]


def test_soak_halves_are_those_of_the_streaming_not_of_the_drain():
    """The 16-call soak on 2 cores: the lag grew all through the 10 minutes, then the drain took it
    down. Over the whole series the peak falls at the halves' boundary and the growth passes."""
    from benchmarks.soak import verdicts

    rss = {"triton": [900.0] * 12}
    lags = _lags([0, 3000, 6500, 9800, 13000, 16000, 12000, 8000, 4000, 1000, 0, 0])
    assert verdicts(lags, rss, 16, 10, 10, 0, 32, 30.0)["lag"]["ok"], "the defect: the drain hides the growth"
    judged = verdicts(lags, rss, 16, 10, 10, 0, 32, 30.0, streamed_s=150.0)["lag"]
    assert not judged["ok"]
    assert (judged["asr_first_half_max"], judged["asr_second_half_max"]) == (6500, 16000)
    assert judged["final"]["asr_alignment"] == 0 and judged["max"]["asr_alignment"] == 16000
    steady = _lags([3, 40, 12, 35, 20, 38, 15, 30, 5, 0, 0, 0])
    assert verdicts(steady, rss, 4, 10, 10, 0, 32, 30.0, streamed_s=240.0)["lag"]["ok"]


def test_soak_memory_growth_after_warm_up_and_unanswered_utterances_fail():
    from benchmarks.soak import verdicts

    lags = _lags([0] * 10)
    loaded = {"triton": [300.0, 900.0, 905, 910, 900, 905, 910, 900, 905, 908]}  # loading the models is not growth
    assert verdicts(lags, loaded, 4, 10, 10, 0, 32, 30.0)["memory"]["ok"]
    leak = {"asr_alignment#0": [400.0, 420, 480, 540, 600, 660, 720, 780, 840, 900]}
    memory = verdicts(lags, leak, 4, 10, 10, 0, 32, 30.0)["memory"]
    assert not memory["ok"] and memory["grown"] == ["asr_alignment#0"]
    assert not verdicts(lags, loaded, 4, 9, 10, 0, 32, 30.0)["answers"]["ok"]
    assert not verdicts(lags, loaded, 4, 10, 10, 1, 32, 30.0)["answers"]["ok"]
    cache = {"redis": [40.0, 60, 80, 100, 120, 140, 160, 180, 200, 220]}
    assert verdicts(lags, cache, 4, 10, 10, 0, 32, 30.0, {"redis": 576.0})["memory"]["ok"], "a cache under its ceiling"
    assert not verdicts(lags, cache, 4, 10, 10, 0, 32, 30.0, {"redis": 150.0})["memory"]["ok"]
    short = verdicts(lags, {"triton": [300.0, 900.0, 950.0]}, 4, 10, 10, 0, 32, 10.0)["memory"]
    assert short["ok"] is None, "30 s of samples: too short to tell growth from warming up"


def test_call_turns_cut_each_turn_from_its_speakers_channel(tmp_path):
    """A stereo 8 kHz call: agent on the left at 440 Hz, customer on the right at 880 Hz; each turn
    comes back from its own channel, by its times, at 16 kHz, with its text and language."""
    import soundfile as sf

    from benchmarks.asr_packing import call_turns

    rate = 8000
    t = np.arange(4 * rate) / rate
    left = np.where(t < 1.5, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0)
    right = np.where(t >= 2.0, 0.5 * np.sin(2 * np.pi * 880 * t), 0.0)
    sf.write(tmp_path / "c1.wav", np.stack([left, right], 1), rate, subtype="PCM_16")
    truth = {
        "call_id": "c1",
        "channel_roles": ["agent", "customer"],
        "language": "en",
        "turns": [
            {"speaker": "agent", "start": 0.2, "end": 1.2, "text": "hello there", "language": "en"},
            {"speaker": "customer", "start": 2.5, "end": 3.5, "text": "annyeong", "language": "ko"},
        ],
    }
    (tmp_path / "c1.json").write_text(json.dumps(truth))
    agent, customer = call_turns([tmp_path / "c1.wav"], margin_s=0.1)
    assert (agent.name, agent.reference, agent.language) == ("c1:0", "hello there", "en")
    assert (customer.name, customer.reference, customer.language) == ("c1:1", "annyeong", "ko")
    assert agent.audio.shape == customer.audio.shape == (int(1.2 * 16000),)

    def pitch(x):
        return np.argmax(np.abs(np.fft.rfft(x))) * 16000 / x.size

    assert pitch(agent.audio) == pytest.approx(440, abs=5) and pitch(customer.audio) == pytest.approx(880, abs=5)
