"""The benchmark's conclusions: named ratios, the issue's targets, a Markdown report and plots.

Everything here is computed from the results dictionary alone, so a results JSON can be
re-rendered (``emotion report results.json``) without running anything again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shared.settings import Settings

STACK_COMPONENTS = ("kafka", "redis", "prometheus", "triton")
"""The processes of ``emotion stack`` (Triton's model processes are ``triton:<model>#<i>``)."""

TARGET_CALLS = 16
"""Concurrent calls at which the throughput targets are set."""
LATENCY_CALLS = 4
"""Concurrent calls (real-time pace) at which the latency target is set."""


def _run(results: dict, calls: int, pace: str, tag: str = "e2e") -> dict | None:
    return next((r for r in results.get(tag, []) if r["calls"] == calls and r["pace"] == pace), None)


def asr_ceiling_x(results: dict) -> float | None:
    """The best split of the cores for bare faster-whisper."""
    runs = results.get("ceilings", {}).get("asr", [])
    return max((r["throughput_x"] for r in runs), default=None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def fusion_ms(results: dict, model: str = "proposed", batch: int = 32, threads: int = 1) -> float | None:
    row = next(
        (r for r in results.get("fusion", []) if (r["model"], r["batch"], r["threads"]) == (model, batch, threads)),
        None,
    )
    return row["ms_per_utterance"] if row else None


def ratios(results: dict) -> dict[str, float | None]:
    """The named ratios and figures of the targets (None when that part did not run)."""
    asr = asr_ceiling_x(results)
    chain = results.get("ceilings", {}).get("chain", {}).get("throughput_x")
    full_window = results.get("ceilings", {}).get("asr_full_window", {}).get("throughput_x")
    out: dict[str, float | None] = {}
    for r in results.get("e2e", []):
        if r["pace"] == "fast":
            out[f"e2e_n{r['calls']}_vs_asr_ceiling"] = _ratio(r["throughput_x"], asr)
            out[f"e2e_n{r['calls']}_vs_full_window_ceiling"] = _ratio(r["throughput_x"], full_window)
            out[f"e2e_n{r['calls']}_vs_chain"] = _ratio(r["throughput_x"], chain)
        out[f"latency_p95_n{r['calls']}_{r['pace']}_s"] = r["latency_s"]["overall"].get("p95")
    for key in (
        f"e2e_n{TARGET_CALLS}_vs_asr_ceiling",
        f"e2e_n{TARGET_CALLS}_vs_chain",
        f"e2e_n{TARGET_CALLS}_vs_full_window_ceiling",
        f"latency_p95_n{LATENCY_CALLS}_realtime_s",
    ):
        out.setdefault(key, None)
    packed = results.get("ceilings", {}).get("asr_packed", {}).get("throughput_x")
    out["asr_packed_vs_one_by_one"] = _ratio(packed, asr)
    wer = results.get("asr_packing", {})
    out["asr_packed_wer_delta"] = round(wer["wer_packed"] - wer["wer_one_by_one"], 4) if "wer_packed" in wer else None
    out["fusion_ms_per_utterance_batch32"] = fusion_ms(results)
    cold = _run(results, TARGET_CALLS, "fast") or next(
        iter(sorted((r for r in results.get("e2e", []) if r["pace"] == "fast"), key=lambda r: -r["calls"])), None
    )
    warm = results.get("cache", {}).get("warm")
    out["cache_warm_vs_cold_throughput"] = _ratio(warm["throughput_x"], cold["throughput_x"]) if warm and cold else None
    return out


TARGETS: tuple[tuple[str, str, str, float], ...] = (
    (f"e2e_n{TARGET_CALLS}_vs_asr_ceiling", f"end-to-end throughput at N={TARGET_CALLS} / ASR-only ceiling", ">=", 0.8),
    (f"e2e_n{TARGET_CALLS}_vs_chain", f"end-to-end throughput at N={TARGET_CALLS} / in-process chain", ">=", 1.5),
    (
        f"e2e_n{TARGET_CALLS}_vs_full_window_ceiling",
        f"end-to-end throughput at N={TARGET_CALLS} / bare faster-whisper with its own 30 s window, one by one "
        "(the ASR ceiling before short encoder windows)",
        ">=",
        2.5,
    ),
    (
        f"latency_p95_n{LATENCY_CALLS}_realtime_s",
        f"p95 utterance-end-to-event latency at N={LATENCY_CALLS}, real time (s)",
        "<=",
        2.0,
    ),
    (
        "fusion_ms_per_utterance_batch32",
        "fusion (proposed, after the GAT) ms per utterance at batch 32, CPU, 1 thread",
        "<=",
        2.0,
    ),
    (
        "asr_packed_wer_delta",
        "packed minus one-by-one word error rate, Asterisk telephony prompts",
        "<=",
        0.005,
    ),
)


def targets(results: dict) -> list[dict[str, Any]]:
    r = results.get("ratios") or ratios(results)
    out = []
    for key, what, op, bound in TARGETS:
        value = r.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append({"field": key, "target": f"{op} {bound}", "what": what, "measured": value, "met": met})
    return out


# ---- Markdown ----------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |",
    ]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def markdown(results: dict, plots: dict[str, str] | None = None) -> str:
    m, w = results["machine"], results["workload"]
    lines = [
        f"# Benchmark: {results['device']['name']}",
        "",
        f"{results['started']} · {m['cpu']} · {m['cores']} cores · {m['memory_gb']} GB · {results['device']['kind'].upper()}"
        f" · `{results['command']}` · {results['duration_s'] / 60:.0f} min",
        "",
        f"Workload: {w['calls']} generated stereo 8 kHz agent/customer calls (English and Korean, "
        f"{w['turns'][0]}-{w['turns'][1]} turns), {w['audio_s']:.0f} s of audio, seed {w['seed']}; "
        f"model: {results['model']['version']} ({results['model']['weights']}).",
        "",
    ]
    lines += ["## Targets", ""]
    lines += _table(
        ["target", "field", "bound", "measured", "met"],
        [
            [
                t["what"],
                f"`{t['field']}`",
                t["target"],
                t["measured"],
                {True: "yes", False: "**no**", None: "not measured"}[t["met"]],
            ]
            for t in results["targets"]
        ],
    )
    c = results.get("ceilings", {})
    if c:
        lines += ["", "## Ceilings (same audio, one process)", ""]
        rows = [
            [
                f"bare faster-whisper, encoder windows of at least {r.get('window_s', 30.0):g} s, {r['workers']} "
                f"worker(s) x {r['threads']} thread(s)",
                r["utterances"],
                r["wall_s"],
                r["throughput_x"],
            ]
            for r in c.get("asr", [])
        ]
        for key, what in (
            ("asr_full_window", "Whisper's own 30 s window for every utterance"),
            ("asr_packed", "packed windows (up to 16 waiting utterances)"),
        ):
            if r := c.get(key):
                rows.append(
                    [
                        f"bare faster-whisper, {what}, {r['workers']} worker(s) x {r['threads']} thread(s)",
                        r["utterances"],
                        r["wall_s"],
                        r["throughput_x"],
                    ]
                )
        if c.get("chain"):
            ch = c["chain"]
            rows.append(
                [
                    f"whole model chain, one utterance at a time, {ch['threads']} threads",
                    ch["utterances"],
                    ch["wall_s"],
                    ch["throughput_x"],
                ]
            )
        lines += _table(["ceiling", "utterances", "wall s", "x real time"], rows)
        if c.get("asr_after"):
            lines += [
                "",
                f"The faster split measured again after the stack was stopped: {c['asr_after']['throughput_x']:.2f}x "
                f"({100 * c['drift']:+.1f} %): how much the machine's speed drifted over the run (a shared host); "
                "the ratios use the measurement taken right before the largest end-to-end run.",
            ]
    packing = results.get("asr_packing")
    if packing and "wer_packed" in packing:
        lines += [
            "",
            "## ASR: packed windows against one by one (real telephony speech)",
            "",
            f"{packing['prompts']} Asterisk prompts ({packing['audio_s']} s of 8 kHz speech, a human voice recorded "
            f"for phone systems), {packing['batch']} waiting at a time, {packing['asr']}, {packing['threads']} "
            f"thread(s); windows of at most {packing['window_s']:g} s, {packing['gap_s']:g} s of silence between "
            "utterances; word error rate against the human transcripts.",
            "",
        ]
        lines += _table(
            ["", "WER", "wall s"],
            [
                ["one by one", f"{packing['wer_one_by_one']:.4f}", packing["wall_one_by_one_s"]],
                [
                    f"packed ({packing['speedup']:.2f}x faster)",
                    f"{packing['wer_packed']:.4f}",
                    packing["wall_packed_s"],
                ],
            ],
        )
        synthetic = packing.get("synthetic_calls")
        if synthetic:
            lines += [
                "",
                f"The same on the {synthetic['prompts']} turns of the generated calls ({synthetic['audio_s']} s, "
                "espeak-ng voices through simulated phone lines, English and Korean waiting in one queue; each "
                "turn cut by its ground-truth times), against the text they were synthesised from:",
                "",
            ]
            lines += _table(
                ["", "utterances", "WER one by one", "WER packed", "CER one by one", "CER packed"],
                [
                    [
                        lang,
                        v["utterances"],
                        f"{v['wer_one_by_one']:.4f}",
                        f"{v['wer_packed']:.4f}",
                        f"{v.get('cer_one_by_one', float('nan')):.4f}",
                        f"{v.get('cer_packed', float('nan')):.4f}",
                    ]
                    for lang, v in synthetic["by_language"].items()
                ]
                + [
                    [
                        f"all ({synthetic['speedup']:.2f}x faster packed)",
                        synthetic["prompts"],
                        f"{synthetic['wer_one_by_one']:.4f}",
                        f"{synthetic['wer_packed']:.4f}",
                        "",
                        "",
                    ]
                ],
            )
    elif packing:
        lines += ["", "## ASR: packed windows against one by one", "", f"Not run: {packing['skipped']}"]
    if results.get("e2e"):
        lines += ["", "## End to end (the five services on Kafka, Redis and Triton)", ""]
        rows = []
        for r in results["e2e"]:
            o = r["latency_s"]["overall"]
            rows.append(
                [
                    r["pace"],
                    r["calls"],
                    r["audio_s"],
                    r["wall_s"],
                    r["throughput_x"],
                    r["rtf"],
                    o.get("p50"),
                    o.get("p95"),
                    o.get("p99"),
                    f"{r['events']}/{r['utterances']}",
                    r["duplicate_events"],
                    max((v["max"] for v in r["lag"].values()), default=0),
                    r["cores_used"],
                ]
            )
        lines += _table(
            [
                "pace",
                "calls",
                "audio s",
                "wall s",
                "x real time",
                "RTF",
                "latency p50 s",
                "p95 s",
                "p99 s",
                "events/utterances",
                "duplicates",
                "max lag (msgs)",
                "cores used",
            ],
            rows,
        )
        lines += ["", "Latency by stage, p50 / p95 (s):", ""]
        stages = list(results["e2e"][0]["latency_s"]["stages"])
        lines += _table(
            ["pace", "calls", *stages],
            [
                [
                    r["pace"],
                    r["calls"],
                    *(
                        f"{_fmt(r['latency_s']['stages'][s].get('p50'))} / "
                        f"{_fmt(r['latency_s']['stages'][s].get('p95'))}"
                        for s in stages
                    ),
                ]
                for r in results["e2e"]
            ],
        )
        big = _run(results, max(r["calls"] for r in results["e2e"]), "fast")
        if big:
            lines += [
                "",
                f"CPU and memory per process, {big['calls']} calls as fast as possible ({big['wall_s']:.0f} s):",
                "",
            ]
            procs = sorted(
                ((k, v) for k, v in big["processes"].items() if k != "total"), key=lambda kv: -kv[1]["cpu_s"]
            )
            lines += _table(
                ["process", "CPU s", "cores", "RSS peak MB", "PSS peak MB"],
                [[k, v["cpu_s"], v["cores"], v["rss_mb_peak"], v.get("pss_mb_peak", "")] for k, v in procs]
                + [
                    [
                        "total",
                        big["processes"]["total"]["cpu_s"],
                        big["processes"]["total"]["cores"],
                        big["processes"]["total"]["rss_mb_peak"],
                        big["processes"]["total"].get("pss_mb_peak", ""),
                    ]
                ],
            )
            stack = {k: v for k, v in procs if k.split("#")[0].partition(":")[0] in STACK_COMPONENTS}
            if stack:
                lines += [
                    "",
                    f"The stack with every model loaded (Kafka, Redis, Prometheus, Triton and its "
                    f"{sum(k.startswith('triton:') for k in stack)} model processes), peak: RSS {sum(v['rss_mb_peak'] for v in stack.values()):.0f} MB, "
                    f"PSS {sum(v.get('pss_mb_peak', 0) for v in stack.values()):.0f} MB (PSS shares the pages "
                    "of the libraries the processes map together, such as torch's, out among them; RSS counts "
                    "them once per process).",
                ]
            if big.get("triton"):
                lines += ["", "Triton during that run (per model):", ""]
                lines += _table(
                    ["model", "requests", "rows per execution", "queue ms", "compute ms per execution"],
                    [
                        [k, v["requests"], v["rows_per_execution"], v["queue_ms"], v["compute_ms_per_execution"]]
                        for k, v in big["triton"].items()
                    ],
                )
    cache = results.get("cache")
    if cache:
        cold, warm = cache["cold"], cache["warm"]
        lines += ["", "## Cache: the same audio streamed again", ""]
        lines += _table(
            ["run", "x real time", "latency p50 s", "p95 s", "hit ratio (asr / text / speech)"],
            [
                [
                    name,
                    r["throughput_x"],
                    r["latency_s"]["overall"].get("p50"),
                    r["latency_s"]["overall"].get("p95"),
                    " / ".join(
                        _fmt(r["cache_hit_ratio"].get(s)) for s in ("asr_alignment", "text_encoder", "speech_encoder")
                    ),
                ]
                for name, r in (("cold", cold), ("warm", warm))
            ],
        )
    if results.get("models"):
        lines += ["", "## Per model: Triton against the same code in-process (ms per request)", ""]
        lines += _table(
            ["model", "batch", "Triton ms", "in-process ms", "Triton ms/utt", "in-process ms/utt", "overhead ms"],
            [
                [
                    r["model"],
                    r["batch"],
                    r["triton_ms"],
                    r["in_process_ms"],
                    r["triton_ms_per_utterance"],
                    r["in_process_ms_per_utterance"],
                    r["overhead_ms"],
                ]
                for r in results["models"]
            ],
        )
    if results.get("batching"):
        lines += ["", "Dynamic batching under concurrency (single-utterance requests):", ""]
        lines += _table(
            ["model", "in flight", "utt/s one at a time", "utt/s in flight", "gain", "rows per execution"],
            [
                [
                    r["model"],
                    r["concurrent"]["concurrency"],
                    r["sequential"]["utterances_per_s"],
                    r["concurrent"]["utterances_per_s"],
                    r["gain"],
                    r["concurrent"]["rows_per_execution"],
                ]
                for r in results["batching"]
            ],
        )
    if results.get("fusion"):
        lines += ["", "## Fusion heads (after the GAT), beside the paper", ""]
        lines += _table(
            ["head", "parameters", "threads", "batch", "ms/utterance", "paper ms/utterance"],
            [
                [
                    r["model"],
                    f"{r['parameters']:,}",
                    r["threads"],
                    r["batch"],
                    r["ms_per_utterance"],
                    r["paper_ms_per_utterance"],
                ]
                for r in results["fusion"]
            ],
        )
    gpu = results.get("gpu")
    lines += ["", "## GPU", "", gpu if isinstance(gpu, str) else f"See {gpu}."]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()]
    return "\n".join(lines) + "\n"


# ---- plots -------------------------------------------------------------------------------------


def plot(results: dict, out_dir: Path, prefix: str) -> dict[str, str]:
    """PNG plots beside the report; returns name -> file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}

    def save(fig, name: str) -> None:
        path = out_dir / f"{prefix}-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made[name] = path.name

    runs = results.get("e2e", [])
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        ns = sorted({r["calls"] for r in runs})
        width = 0.38
        for i, pace in enumerate(("fast", "realtime")):
            ys = [(_run(results, n, pace) or {}).get("throughput_x") or 0 for n in ns]
            ax.bar([k + (i - 0.5) * width for k in range(len(ns))], ys, width, label=f"pipeline, {pace}")
        asr, chain = asr_ceiling_x(results), results.get("ceilings", {}).get("chain", {}).get("throughput_x")
        if asr:
            ax.axhline(asr, color="tab:red", ls="--", label=f"ASR-only ceiling ({asr:.1f}x)")
            ax.axhline(0.8 * asr, color="tab:red", ls=":", label="0.8 x ASR ceiling (target)")
        if chain:
            ax.axhline(chain, color="tab:gray", ls="--", label=f"in-process chain ({chain:.1f}x)")
        ax.set_xticks(range(len(ns)), [f"N={n}" for n in ns])
        ax.set_ylabel("seconds of call audio per second")
        ax.set_title("Throughput (concurrent calls)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
        save(fig, "throughput")

        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            if r["latencies_s"]:
                xs = sorted(r["latencies_s"])
                ax.step(
                    xs,
                    [(i + 1) / len(xs) for i in range(len(xs))],
                    where="post",
                    ls="-" if r["pace"] == "realtime" else ":",
                    label=f"N={r['calls']} {r['pace']}",
                )
        ax.axvline(2.0, color="tab:red", ls="--", label="2 s target (N=4, real time)")
        ax.axhline(0.95, color="tab:gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("utterance end -> emotion event (s, log scale)")
        ax.set_ylabel("fraction of utterances")
        ax.set_title("Latency (cumulative; grey line: p95)")
        ax.legend(fontsize=8)
        save(fig, "latency")

        fig, ax = plt.subplots(figsize=(8, 4))
        stages = list(runs[0]["latency_s"]["stages"])
        bottoms = [0.0] * len(runs)
        for stage in stages:
            vals = [r["latency_s"]["stages"][stage].get("p50") or 0 for r in runs]
            ax.bar(range(len(runs)), vals, bottom=bottoms, label=stage)
            bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
        ax.set_xticks(range(len(runs)), [f"{r['pace']}\nN={r['calls']}" for r in runs], fontsize=8)
        ax.set_ylabel("median seconds")
        ax.set_title("Where an utterance's latency goes (p50 per stage)")
        ax.legend(fontsize=8, ncol=2)
        save(fig, "stages")

        big = _run(results, max(r["calls"] for r in runs), "fast")
        if big:
            procs = sorted(((k, v["cores"]) for k, v in big["processes"].items() if k != "total"), key=lambda kv: kv[1])
            fig, ax = plt.subplots(figsize=(7, 0.3 * len(procs) + 1.2))
            ax.barh([k for k, _ in procs], [v for _, v in procs])
            ax.set_xlabel("cores (CPU seconds / wall second)")
            ax.set_title(f"CPU per process, N={big['calls']} as fast as possible")
            save(fig, "cpu")

            fig, ax = plt.subplots(figsize=(7, 4))
            for service in big["lag"]:
                xs = [t for t, _ in big["lag_series"]]
                ys = [lags.get(service, 0) for _, lags in big["lag_series"]]
                ax.plot(xs, ys, label=service)
            ax.set_xlabel("seconds into the run")
            ax.set_ylabel("messages behind")
            ax.set_title(f"Consumer lag, N={big['calls']} as fast as possible")
            ax.legend(fontsize=8)
            save(fig, "lag")

    rows = results.get("models", [])
    if rows:
        names = list(dict.fromkeys(r["model"] for r in rows))
        fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3.4))
        for ax, name in zip(axes, names, strict=True):
            mine = [r for r in rows if r["model"] == name]
            xs = range(len(mine))
            ax.bar([x - 0.2 for x in xs], [r["triton_ms_per_utterance"] for r in mine], 0.4, label="Triton")
            ax.bar([x + 0.2 for x in xs], [r["in_process_ms_per_utterance"] for r in mine], 0.4, label="in-process")
            ax.set_xticks(list(xs), [f"b{r['batch']}" for r in mine])
            ax.set_title(name, fontsize=9)
            ax.set_yscale("log")
        axes[0].set_ylabel("ms per utterance")
        axes[0].legend(fontsize=8)
        save(fig, "models")
    return made


def write(results: dict, out_dir: Path, prefix: str, latest: bool = True) -> list[Path]:
    """``<prefix>.json``, ``<prefix>.md`` and the plots, plus (``latest``) ``latest.json`` / ``latest.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    plots = plot(results, out_dir, prefix)
    text = json.dumps(results, indent=1)
    md = markdown(results, plots)
    paths = []
    for name in (prefix, "latest") if latest else (prefix,):
        (out_dir / f"{name}.json").write_text(text)
        (out_dir / f"{name}.md").write_text(md)
        paths += [out_dir / f"{name}.json", out_dir / f"{name}.md"]
    return paths + [out_dir / p for p in plots.values()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Re-render a benchmark's report (Markdown, ratios, targets and plots) from its results JSON, without "
        "running anything again (emotion bench and emotion soak write the JSON). The report and plots are named "
        "after the JSON (cpu-window10.json: cpu-window10.md, cpu-window10-*.png); latest.* is left alone."
    )
    parser.add_argument("results", type=Path, help="a results JSON, e.g. benchmarks/results/cpu.json")
    parser.add_argument("out_dir", type=Path, nargs="?", help="where to write (default: beside the JSON)")


def main(args: argparse.Namespace, settings: Settings) -> int:
    results = json.loads(args.results.read_text())
    for p in write(results, args.out_dir or args.results.parent, args.results.stem, latest=False):
        print(p)
    return 0
