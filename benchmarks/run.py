"""``emotion bench``: run every section on a benchmark stack of its own and write the results.

Order: the ceilings first (nothing else running), then the stack (Kafka, Redis, Triton with the
five models, Prometheus; its own name and free ports, so a running demo is not disturbed) and
the five services, the end-to-end runs (each cold: cached transcripts and features cleared
first), the cache run (the largest fast run again, warm), the per-model section on the
utterances of that run, the fusion heads, then everything is stopped and the report written.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shared.settings import PROJECT_ROOT, Settings

log = logging.getLogger("emotion.bench")

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
SECTIONS = ("ceilings", "asr-packing", "e2e", "cache", "models", "fusion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure throughput, latency and cost on the real local stack against their ceilings: end to end with N "
        "concurrent calls (real time and as fast as possible), bare faster-whisper and the in-process model chain on "
        "the same audio, each Triton model against the same code in-process, dynamic batching, the fusion heads "
        "beside the paper, and the cache. Writes JSON, Markdown and plots to --results (the latest run also as "
        "latest.json / latest.md). Runs on a stack of its own (free ports), so a running demo is left alone."
    )
    parser.epilog = (
        "examples:  emotion bench                          (everything: about 25 min on 2 cores)\n"
        "           emotion bench --quick --results /tmp/b (a few minutes: fewer, shorter calls)\n"
        "           emotion bench --sections fusion models --calls 4\n"
        "           emotion bench --device cuda            (on a GPU host: reported separately, with the card)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--calls",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="concurrent calls of the end-to-end runs (default 1 4 16)",
    )
    parser.add_argument(
        "--paces",
        nargs="+",
        choices=["fast", "realtime"],
        default=["fast", "realtime"],
        help="publish as fast as possible and/or in real time (default both)",
    )
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure (default all)"
    )
    parser.add_argument(
        "--turns",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="turns per generated call (default 5 8)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated calls")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="trained model folder to serve (default: the default trained model, else random weights "
        "of the proposed model: the same cost)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the models run")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 and 2 calls of 2-3 turns, small batches")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help=f"where to write (default {RESULTS_DIR})")
    parser.add_argument("--keep", action="store_true", help="leave the benchmark stack running afterwards")


# ---- the machine ------------------------------------------------------------------------------------


def cores() -> int:
    return len(os.sched_getaffinity(0))


def gpu_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    out = subprocess.run(
        [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def machine() -> dict:
    import ctranslate2
    import faster_whisper
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    mem = Path("/proc/meminfo").read_text().split()[1] if Path("/proc/meminfo").exists() else "0"
    return {
        "cpu": cpu,
        "cores": cores(),
        "memory_gb": round(int(mem) / 1024**2, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ctranslate2": ctranslate2.__version__,
        "faster_whisper": faster_whisper.__version__,
        "gpu": gpu_name(),
    }


def device_of(choice: str) -> dict:
    name = gpu_name()
    if choice == "cuda" and name is None:
        raise SystemExit("emotion bench --device cuda: no GPU here (nvidia-smi lists none)")
    if choice == "cpu" or name is None:
        return {"kind": "cpu", "name": f"CPU, {cores()} cores", "tag": "cpu"}
    return {"kind": "gpu", "name": name, "tag": "gpu-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")}


# ---- the stack --------------------------------------------------------------------------------------


def bench_settings(settings: Settings, device: dict) -> Settings:
    from deploy.local.stack import isolated

    s = isolated(settings, f"bench-{device['tag']}")
    s.triton.model_repository = s.run_dir / "model_repository"
    s.triton.request_timeout_s = 300.0  # a backlog of utterances queues at Whisper
    s.triton.startup_timeout_s = 600.0
    if device["kind"] == "gpu":
        s.triton.instance_kind, s.models.device = "gpu", "cuda"
    return s


def fresh_stack(bench: Settings) -> None:
    """Stop what an earlier benchmark left running and drop its data: every run starts with an
    empty broker, cache and time series."""
    from deploy.local import stack

    stack.down(bench)
    for name in ("kafka", "redis", "prometheus", "services"):
        shutil.rmtree(bench.run_dir / name, ignore_errors=True)


def served_model(settings: Settings, bench: Settings, given: Path | None) -> tuple[Path, str]:
    """The trained model folder to serve and what its weights are."""
    from training.checkpoint import MODEL_FILE

    if given is not None:
        return given, "given"
    if (settings.default_model_dir / MODEL_FILE).exists():
        return settings.default_model_dir, "the default trained model"
    import torch

    from training.checkpoint import ModelMeta, save_model
    from training.models import FusionConfig, build_model
    from training.encoders import SpeechEncoder, TextEncoder

    directory = bench.run_dir / "random-model"
    if not (directory / MODEL_FILE).exists():
        dims = FusionConfig(d_text=TextEncoder.from_bundle(bench).dim, d_speech=SpeechEncoder.from_bundle(bench).dim)
        torch.manual_seed(0)
        model = build_model("proposed", dims).eval()
        save_model(
            directory, model, ModelMeta("proposed", model.config.to_dict(), list(model.config.class_names), seed=0)
        )
    return directory, "random weights of the proposed model (no trained model yet; the cost is the same)"


# ---- the command ------------------------------------------------------------------------------------


def main(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm.auto import tqdm

    from benchmarks import asr_packing, ceilings, fusion, models, pipeline, report
    from benchmarks.workload import Workload
    from training.encoders.packing import PackingOptions
    from deploy.local import stack
    from deploy.local.services import ServiceProcesses
    from training.checkpoint import model_version, read_meta
    from training.models import FusionConfig
    from training.serving.export import export_repository

    quick = args.quick
    needs_stack = bool(set(args.sections) & {"e2e", "cache", "models"})
    calls = sorted(set(args.calls or ([1, 2] if quick else [1, 4, 16])))
    turns = tuple(args.turns or ((2, 3) if quick else (5, 8)))
    sections = set(args.sections)
    device = device_of(args.device)
    bench = bench_settings(settings, device)
    n_cores = cores()
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M")
    workload = Workload.generate(bench.run_dir / "calls", max(calls), args.seed, turns)  # type: ignore[arg-type]
    model_dir, weights = served_model(settings, bench, args.model)
    results: dict = {
        "started": started,
        "command": "emotion " + " ".join(sys.argv[sys.argv.index("bench") :])
        if "bench" in sys.argv
        else "emotion bench",
        "machine": machine(),
        "device": device,
        "workload": {
            "calls": len(workload.calls),
            "turns": list(turns),
            "seed": args.seed,
            "audio_s": round(workload.audio_seconds(max(calls)), 1),
        },
        "model": {"dir": str(model_dir), "version": model_version(model_dir), "weights": weights},
        "gpu": (
            "not run: no GPU on this machine; `emotion bench --device cuda` on a GPU host writes its own report "
            "(gpu-<card>.md) beside this one"
        )
        if device["kind"] == "cpu"
        else "this report is the GPU run",
    }
    steps = (
        (2 + bool(needs_stack) if "ceilings" in sections else 0)
        + ("asr-packing" in sections)
        + ("e2e" in sections) * len(calls) * len(args.paces)
        + ("cache" in sections)
        + 2 * ("models" in sections)
        + ("fusion" in sections)
    )
    bar = tqdm(total=steps + 1, desc="bench", unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty())

    def step(what: str) -> None:
        bar.set_postfix_str(what)
        log.info("bench: %s (%.0f s so far)", what, time.monotonic() - t0)

    workers = _asr_default()  # as many Whispers as the asr model has instances
    best_split = (workers, max(1, n_cores // workers))
    if "ceilings" in sections:
        # one Whisper with every thread, the chain, then the parallel split (usually the ceiling)
        # last, right before the stack and the largest end-to-end run: the machine's speed drifts
        step("ceiling: bare faster-whisper, one Whisper")
        results["ceilings"] = {"asr": [ceilings.asr_ceiling(bench, workload, max(calls), 1, n_cores)]}
        step("ceiling: the in-process chain")
        results["ceilings"]["chain"] = ceilings.chain_ceiling(bench, workload, max(calls), model_dir, n_cores)
        bar.update()
        if best_split != (1, n_cores):
            step("ceiling: bare faster-whisper, one Whisper per instance")
            results["ceilings"]["asr"].append(ceilings.asr_ceiling(bench, workload, max(calls), *best_split))
        step("ceiling: bare faster-whisper, Whisper's own 30 s window (the ceiling before models.asr_window_s)")
        results["ceilings"]["asr_full_window"] = ceilings.asr_ceiling(
            bench, workload, max(calls), *best_split, window_s=30.0
        )
        step("ceiling: bare faster-whisper, packed windows")
        results["ceilings"]["asr_packed"] = ceilings.asr_ceiling(
            bench, workload, max(calls), *best_split, packing=PackingOptions.from_settings(bench) or PackingOptions()
        )
        bar.update()

    if "asr-packing" in sections:
        step("ASR: packed against one by one on telephony prompts (word error rate)")
        results["asr_packing"] = asr_packing.run(
            bench, threads=n_cores, quick=quick, calls=[c.path for c in workload.calls[: max(calls)]]
        )
        bar.update()

    services = ServiceProcesses(bench)
    try:
        if needs_stack:
            step("stack up")
            fresh_stack(bench)
            export_repository(bench, model_dir=model_dir)
            stack.up(bench, timeout_s=900)
            services.start(timeout_s=600)
        bar.update()
        largest = None
        if "e2e" in sections or "cache" in sections:
            results["e2e"] = []
            runs = [(pace, n) for pace in args.paces for n in calls] if "e2e" in sections else [("fast", max(calls))]
            if ("fast", max(calls)) in runs:  # first: the run the ceilings are compared with, closest to them
                runs.remove(("fast", max(calls)))
                runs.insert(0, ("fast", max(calls)))
            for pace, n in runs:
                step(f"end to end: {n} call(s), {pace}")
                pipeline.clear_caches(bench)
                outcome = pipeline.run_calls(bench, services, workload, n, pace, f"{pace}{n}")
                results["e2e"].append(outcome.result)
                if (pace, n) == ("fast", max(calls)):
                    largest = outcome
                bar.update()
            results["e2e"].sort(key=lambda r: (r["pace"], r["calls"]))
            if "cache" in sections and largest is not None:
                step(f"cache: {max(calls)} calls again, warm")
                warm = pipeline.run_calls(bench, services, workload, max(calls), "fast", f"warm{max(calls)}")
                results["cache"] = {"cold": largest.result, "warm": warm.result}
                bar.update()
            if "e2e" not in sections:
                results.pop("e2e")
        if "models" in sections:
            step("per model: Triton against in-process")
            utterances = largest.utterances if largest else _fresh_utterances(bench, services, workload, max(calls))
            n_samples = 8 if quick else 32
            samples = models.collect_samples(bench, utterances, n_samples)
            batches = {
                m: ((1, 2) if m == "asr" else (1, 4)) if quick else ((1, 8) if m == "asr" else (1, 8, 32))
                for m in models.MODELS
            }
            results["models"] = models.latency_table(
                bench,
                samples,
                batches,
                budget_s=1.0 if quick else 3.0,
                device="cuda" if device["kind"] == "gpu" else "cpu",
            )
            bar.update()
            step("per model: dynamic batching under concurrency")
            asr_instances = bench.triton.asr_instances or _asr_default()
            concurrency = {m: asr_instances if m == "asr" else min(8, n_samples) for m in models.MODELS}
            results["batching"] = models.batching_gain(bench, samples, concurrency, budget_s=2.0 if quick else 5.0)
            bar.update()
    finally:
        services.stop()
        if needs_stack and not args.keep:
            stack.down(bench)
    if "ceilings" in sections and needs_stack:
        step("ceiling again: how much the machine's speed drifted over the run")
        before = results["ceilings"]["asr"][-1]
        after = ceilings.asr_ceiling(bench, workload, max(calls), before["workers"], before["threads"])
        results["ceilings"]["asr_after"] = after
        results["ceilings"]["drift"] = round(after["throughput_x"] / before["throughput_x"] - 1, 3)
        bar.update()
    if "fusion" in sections:
        step("fusion heads")
        meta = read_meta(model_dir)
        results["fusion"] = fusion.fusion_table(
            FusionConfig.coerce(meta.config), (1, 32), (1, n_cores) if n_cores > 1 else (1,), rounds=1 if quick else 3
        )
        bar.update()
    results["duration_s"] = round(time.monotonic() - t0, 1)
    paths = report.write(results, args.results, device["tag"])
    bar.update()
    bar.close()
    print(report.markdown(results).split("## Ceilings")[0].rstrip())
    print(f"\nwritten: {', '.join(str(p) for p in paths)}")
    return 0


def _asr_default() -> int:
    from training.serving.repository import asr_default_instances

    return asr_default_instances()


def _fresh_utterances(bench: Settings, services, workload, n: int):
    """Utterances for the per-model section when no end-to-end run gave any."""
    from benchmarks import pipeline

    return pipeline.run_calls(bench, services, workload, n, "fast", f"samples{n}").utterances
