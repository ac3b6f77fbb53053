"""The paper's comparison table: every model over several seeds on the same held-out test split.

:func:`run_comparison` extracts the features once (cached), trains each row of the comparison
recipe (``training/recipes/comparison.yaml``: BiLSTM text, CNN speech, MLP graph, early fusion,
late fusion, CA-MoE alone, SP-MoE alone, the proposed model with top-1 and top-2 gating) for every
seed, evaluates it on the test split and writes to ``out_dir``:

* ``results.json`` -- per row: test metrics per seed and their mean / SD / 95% t-interval,
  parameters, epochs, training time, per-language and per-cue breakdowns, and the findings
  (does the proposed model beat every unimodal baseline and each single branch?);
* ``results.md`` -- the same as Markdown tables;
* ``confusion_<row>.png`` -- confusion matrix of each row's best seed (chosen on the
  *validation* F1, never on the test split);
* ``comparison.png`` -- accuracy and weighted F1 per row with their 95% intervals;
* ``runs/<row>/seed-<k>/`` -- each trained model folder (:func:`training.train.save_trained`) and
  its ``result.json``; a rerun skips the runs already there, so an interrupted comparison resumes.

The per-cue breakdown uses the synthetic corpus's ``extra["cue"]`` (``voice``: emotional voice,
neutral words; ``text``: emotional words, neutral voice; ``both``), which is how the table shows
that no single modality solves the task.  ``emotion compare`` is :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from training.evaluate import (
    METRIC_NAMES,
    Metrics,
    breakdown,
    confusion_matrix_png,
    metrics_from_predictions,
    predict,
    summarise_seeds,
    summarise_values,
)
from training.train import RECIPES_DIR, ConfigError, TrainConfig, default_corpus, prepare_features, save_trained, train

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings
    from training.features import FeatureRecord

__all__ = [
    "DEFAULT_COMPARISON",
    "ComparisonRecipe",
    "ComparisonRow",
    "add_arguments",
    "main",
    "run_comparison",
]

log = logging.getLogger("training.compare")

DEFAULT_COMPARISON = RECIPES_DIR / "comparison.yaml"
BREAKDOWNS: tuple[str, ...] = ("language", "cue")
"""Record attributes the test metrics are broken down by."""
BASELINE_KINDS: tuple[str, ...] = ("unimodal", "single branch")
"""Rows the proposed rows are checked against in the findings."""


# ---- the recipe -----------------------------------------------------------------------------------------


@dataclass
class ComparisonRow:
    """One row of the table: a label and dotted overrides of the base recipe."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    """``unimodal``, ``fusion baseline``, ``single branch`` or ``proposed`` (used by the findings)."""

    @property
    def slug(self) -> str:
        """File-name form of the label (``Proposed (top-1)`` -> ``proposed-top-1``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


@dataclass
class ComparisonRecipe:
    base: TrainConfig
    seeds: tuple[int, ...]
    rows: list[ComparisonRow]
    global_overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides applied to every row (the command line's)."""

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> ComparisonRecipe:
        """Read ``path``; ``overrides`` (``key=value``) apply to every row, after the row's own."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"comparison recipe not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - {"base", "seeds", "rows"}
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (expected base, seeds, rows)")
        base_path = Path(data.get("base") or "proposed.yaml")
        base_path = base_path if base_path.is_absolute() else path.parent / base_path
        base = TrainConfig.from_yaml(base_path)
        rows = []
        for i, row in enumerate(data.get("rows") or []):
            if not isinstance(row, Mapping) or "label" not in row:
                raise ConfigError(f"{path}: row {i + 1} needs a label")
            extra = set(row) - {"label", "overrides", "kind"}
            if extra:
                raise ConfigError(f"{path}: row {row['label']!r}: unknown keys {sorted(extra)}")
            rows.append(ComparisonRow(str(row["label"]), dict(row.get("overrides") or {}), str(row.get("kind", ""))))
        if not rows:
            raise ConfigError(f"{path}: no rows")
        if len({r.slug for r in rows}) != len(rows):
            raise ConfigError(f"{path}: row labels must be distinct")
        recipe = cls(base, tuple(int(s) for s in data.get("seeds", (0,))), rows, list(overrides))
        for row in rows:  # fail early on a bad row
            recipe.config_for(row)
        return recipe

    def config_for(self, row: ComparisonRow) -> TrainConfig:
        """The base recipe with the row's overrides, then the command-line overrides."""
        try:
            return self.base.with_overrides(row.overrides).with_overrides(self.global_overrides)
        except ConfigError as exc:
            raise ConfigError(f"row {row.label!r}: {exc}") from exc

    def select(self, models: Sequence[str] | None) -> list[ComparisonRow]:
        """Rows whose label, slug or model name is in ``models`` (all rows when None)."""
        if not models:
            return list(self.rows)
        wanted = set(models)
        rows = [r for r in self.rows if {r.label, r.slug, self.config_for(r).model.name} & wanted]
        if not rows:
            raise ConfigError(f"no row matches {sorted(wanted)}; rows: {[r.slug for r in self.rows]}")
        return rows


# ---- one run --------------------------------------------------------------------------------------------


def _run_one(
    config: TrainConfig,
    row: ComparisonRow,
    seed: int,
    splits: Mapping[str, Sequence[FeatureRecord]],
    encoders: Mapping[str, str],
    run_dir: Path,
    corpus: str,
    speaker_window: int,
) -> dict[str, Any]:
    """Train, evaluate on the test split, save the model folder and ``result.json``."""
    from training.models.profile import parameter_count

    model, history = train(config, splits["train"], splits["val"], seed=seed, speaker_window=speaker_window)
    test = list(splits["test"])
    pred = predict(model, test)
    names = list(model.config.class_names)
    metrics = metrics_from_predictions(pred.y_true, pred.y_pred, names, pred.loss)
    save_trained(run_dir, model, history, config, encoders=encoders, test_metrics=metrics, corpus=corpus)
    result = {
        "label": row.label,
        "slug": row.slug,
        "kind": row.kind,
        "model": config.model.name,
        "overrides": row.overrides,
        "seed": seed,
        "params": parameter_count(model),
        "best_epoch": history.best_epoch,
        "epochs_run": len(history.epochs),
        "train_seconds": round(history.seconds, 1),
        "val": {k: history.best_val[k] for k in METRIC_NAMES},
        "test": metrics.to_dict(),
        "breakdown": {
            key: {g: m.summary() | {"n": m.n} for g, m in breakdown(test, pred.y_pred, key, names).items()}
            for key in BREAKDOWNS
        },
        "predictions": {"ids": [r.id for r in test], "y_pred": pred.y_pred.tolist()},
        "config": _run_config(config),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _run_config(config: TrainConfig) -> dict[str, Any]:
    """What a finished run must match to be reused (progress bars and worker counts do not count)."""
    d = config.to_dict()
    d["train"].pop("progress", None)
    d["train"].pop("threads", None)
    d["data"].pop("workers", None)
    return json.loads(json.dumps(d))


_SPLITS: dict[str, list[Any]] | None = None
_ENCODERS: dict[str, str] = {}
_SPEAKER_WINDOW = 0


def _init_worker(settings: Settings, manifest: str, data: Any, threads: int, log_level: str) -> None:
    """Worker process: one torch thread, features loaded from the (already filled) cache."""
    global _SPLITS, _ENCODERS, _SPEAKER_WINDOW
    from shared.logs import configure_logging

    configure_logging(log_level)
    torch.set_num_threads(threads)
    _SPLITS, _ENCODERS = prepare_features(settings, manifest, data, progress=False)
    _SPEAKER_WINDOW = settings.models.speaker_window


def _worker_job(config: TrainConfig, row: ComparisonRow, seed: int, run_dir: Path, corpus: str) -> dict[str, Any]:
    assert _SPLITS is not None
    return _run_one(config, row, seed, _SPLITS, _ENCODERS, run_dir, corpus, _SPEAKER_WINDOW)


# ---- the table ------------------------------------------------------------------------------------------


def machine_description() -> dict[str, Any]:
    """CPU model, cores, memory, Python and torch versions (for the report)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        memory = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _aggregate(rows: Sequence[ComparisonRow], results: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        runs = sorted(results.get(row.slug, []), key=lambda r: r["seed"])
        if not runs:
            continue
        summary = summarise_seeds([r["test"] for r in runs])
        groups: dict[str, dict[str, Any]] = {}
        for key in BREAKDOWNS:
            names = sorted({g for r in runs for g in r["breakdown"].get(key, {})})
            groups[key] = {}
            for g in names:
                cells = [r["breakdown"][key][g] for r in runs if g in r["breakdown"][key]]
                groups[key][g] = {
                    "n": cells[0]["n"],
                    **{m: summarise_values([c[m] for c in cells]).to_dict() for m in ("accuracy", "f1")},
                }
        best = max(runs, key=lambda r: (r["val"]["f1"], -r["seed"]))
        table.append(
            {
                "label": row.label,
                "slug": row.slug,
                "kind": row.kind,
                "model": runs[0]["model"],
                "overrides": row.overrides,
                "params": runs[0]["params"],
                "seeds": [r["seed"] for r in runs],
                "test": {k: v.to_dict() for k, v in summary.items()},
                "val_f1": summarise_values([r["val"]["f1"] for r in runs]).to_dict(),
                "epochs_run": float(np.mean([r["epochs_run"] for r in runs])),
                "best_epoch": float(np.mean([r["best_epoch"] for r in runs])),
                "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
                "best_seed": best["seed"],
                "breakdown": groups,
            }
        )
    return table


def findings(table: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each ``proposed`` row: does its mean test accuracy and weighted F1 exceed every
    unimodal baseline and each single branch?  Also whether the 95% intervals overlap."""
    out = []
    baselines = [r for r in table if r["kind"] in BASELINE_KINDS]
    for p in (r for r in table if r["kind"] == "proposed"):
        versus = []
        for b in baselines:
            cell = {"against": b["label"], "kind": b["kind"]}
            for m in ("accuracy", "f1"):
                pm, bm = p["test"][m], b["test"][m]
                overlap = pm["ci_low"] <= bm["ci_high"] and bm["ci_low"] <= pm["ci_high"]
                cell[m] = {
                    "beats": pm["mean"] > bm["mean"],
                    "difference": pm["mean"] - bm["mean"],
                    "intervals_overlap": overlap,
                }
            versus.append(cell)
        out.append(
            {
                "proposed": p["label"],
                "beats_all_on_accuracy": all(v["accuracy"]["beats"] for v in versus),
                "beats_all_on_f1": all(v["f1"]["beats"] for v in versus),
                "versus": versus,
            }
        )
    return out


def _pm(s: Mapping[str, Any]) -> str:
    return f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f} [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"


def results_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: the main table, the breakdowns and the findings."""
    table = report["table"]
    n_seeds = max((len(r["seeds"]) for r in table), default=0)
    lines = [] if report.get("complete", True) else ["**Partial results: the comparison is still running.**", ""]
    lines += [
        f"Test split of `{report['manifest']}` ({report['splits']['test']} utterances; "
        f"{report['splits']['train']} train / {report['splits']['val']} val), up to {n_seeds} seeds "
        f"({', '.join(map(str, report['seeds']))}); text source `{report.get('text_source', 'asr')}`; "
        "mean ± SD [95% t-interval] in %.",
        "",
        "| model | kind | accuracy | weighted F1 | params | seeds | epochs (best) | train s/seed |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in table:
        lines.append(
            f"| {r['label']} | {r['kind']} | {_pm(r['test']['accuracy'])} | {_pm(r['test']['f1'])} | "
            f"{r['params']:,} | {len(r['seeds'])} | {r['epochs_run']:.1f} ({r['best_epoch']:.1f}) | "
            f"{r['train_seconds']:.0f} |"
        )
    for key in BREAKDOWNS:
        groups = sorted({g for r in table for g in r["breakdown"].get(key, {})})
        if not groups:
            continue
        counts = {g: next((r["breakdown"][key][g]["n"] for r in table if g in r["breakdown"][key]), 0) for g in groups}
        lines += [
            "",
            f"Per {key} (test accuracy / weighted F1, mean over seeds, %):",
            "",
            "| model | " + " | ".join(f"{g} (n={counts[g]})" for g in groups) + " |",
            "| --- |" + " ---: |" * len(groups),
        ]
        for r in table:
            cells = []
            for g in groups:
                c = r["breakdown"][key].get(g)
                cells.append(f"{100 * c['accuracy']['mean']:.1f} / {100 * c['f1']['mean']:.1f}" if c else "")
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    for f in report["findings"]:
        lines += [
            "",
            f"**{f['proposed']}** beats every unimodal baseline and single branch on accuracy: "
            f"**{'yes' if f['beats_all_on_accuracy'] else 'no'}**; on weighted F1: "
            f"**{'yes' if f['beats_all_on_f1'] else 'no'}**.",
            "",
        ]
        for v in f["versus"]:
            acc, f1 = v["accuracy"], v["f1"]
            lines.append(
                f"- vs {v['against']}: accuracy {100 * acc['difference']:+.1f} pt"
                f"{' (95% intervals overlap)' if acc['intervals_overlap'] else ''}, "
                f"F1 {100 * f1['difference']:+.1f} pt{' (95% intervals overlap)' if f1['intervals_overlap'] else ''}"
            )
    m = report["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; torch {m['torch']}; "
        f"{report['workers']} training process(es). Wall time {report['seconds'] / 60:.0f} min.",
    ]
    return "\n".join(lines) + "\n"


def comparison_png(path: str | Path, table: Sequence[Mapping[str, Any]]) -> Path:
    """Bar chart: test accuracy and weighted F1 per row, error bars = 95% t-intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in table]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(labels) + 2), 4.2), dpi=110)
    try:
        for offset, metric, name in ((-0.2, "accuracy", "accuracy"), (0.2, "f1", "weighted F1")):
            mean = np.array([r["test"][metric]["mean"] for r in table])
            low = mean - np.array([r["test"][metric]["ci_low"] for r in table])
            high = np.array([r["test"][metric]["ci_high"] for r in table]) - mean
            ax.bar(x + offset, 100 * mean, 0.4, label=name)
            # plain lists: numpy arrays as error bars trip a NumPy deprecation inside matplotlib 3.11
            yerr = [(100 * low).tolist(), (100 * high).tolist()]
            ax.errorbar((x + offset).tolist(), (100 * mean).tolist(), yerr=yerr, fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_ylabel("% on the test split (95% CI over seeds)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def run_comparison(
    settings: Settings,
    manifest: str | Path | None = None,
    out_dir: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    models: Sequence[str] | None = None,
    *,
    recipe: str | Path = DEFAULT_COMPARISON,
    overrides: Sequence[str] = (),
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate every row of the comparison ``recipe`` over ``seeds`` and write the report.

    ``manifest``: the corpus (default: the recipe's ``data.manifest``, else the default synthetic
    corpus); ``out_dir``: default ``<home>/comparison/<corpus folder name>``; ``seeds``: default
    the recipe's (0-4); ``models``: row labels, slugs or model names to run (default: every row);
    ``overrides``: ``key=value`` applied to every row (e.g. ``train.epochs=30``); ``workers``:
    training processes running (row, seed) jobs side by side with one torch thread each.
    Returns the report written to ``results.json``.
    """
    started = time.perf_counter()
    plan = ComparisonRecipe.from_yaml(recipe, overrides)
    rows = plan.select(models)
    seeds = tuple(plan.seeds if seeds is None else seeds)
    base = plan.config_for(rows[0])
    data = base.data
    for row in rows[1:]:
        if plan.config_for(row).data != data:
            raise ConfigError(f"row {row.label!r} changes the data section: every row must share the features")
    manifest = str(manifest or data.manifest or default_corpus(settings, progress))
    out = Path(out_dir or settings.home / "comparison" / Path(manifest).resolve().parent.name)
    out.mkdir(parents=True, exist_ok=True)
    splits, encoders = prepare_features(settings, manifest, data, progress)
    if not splits["val"] or not splits["test"]:
        raise ValueError(
            f"{manifest}: the comparison needs val and test splits, got { ({k: len(v) for k, v in splits.items()}) }"
        )
    results: dict[str, list[dict[str, Any]]] = {}
    jobs = []
    for seed in seeds:  # seed-major: a complete table for the first seeds comes early
        for row in rows:
            run_dir = out / "runs" / row.slug / f"seed-{seed}"
            config = plan.config_for(row)
            done = run_dir / "result.json"
            previous = json.loads(done.read_text()) if done.is_file() else None
            if previous is not None and previous.get("config") == _run_config(config):
                results.setdefault(row.slug, []).append(previous)
            else:
                if previous is not None:
                    log.warning("comparison: %s was trained with another configuration: retraining it", run_dir)
                jobs.append((config, row, seed, run_dir))
    log.info(
        "comparison: %d rows x %d seeds, %d runs to train (%d already done) -> %s",
        len(rows),
        len(seeds),
        len(jobs),
        sum(map(len, results.values())),
        out,
    )
    meta = {
        "manifest": manifest,
        "recipe": str(recipe),
        "overrides": list(overrides),
        "seeds": list(seeds),
        "splits": {k: len(v) for k, v in splits.items()},
        "text_source": data.text_source,
        "encoders": encoders,
        "machine": machine_description(),
        "workers": workers,
    }

    def finished(result: dict[str, Any]) -> None:
        results.setdefault(result["slug"], []).append(result)
        bar.update(1)
        _write_report(out, rows, results, meta, time.perf_counter() - started, figures=False)  # partial table

    bar = tqdm(total=len(jobs), desc="comparison", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        if workers > 1 and len(jobs) > 1:
            context = multiprocessing.get_context("spawn")
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init_worker, initargs=(settings, manifest, data, 1, level)
            ) as pool:
                futures = []
                for config, row, seed, run_dir in jobs:
                    config.train.progress = False
                    futures.append(pool.submit(_worker_job, config, row, seed, run_dir, manifest))
                for future in as_completed(futures):
                    finished(future.result())
        else:
            for config, row, seed, run_dir in jobs:
                config.train.progress = config.train.progress and progress
                finished(
                    _run_one(config, row, seed, splits, encoders, run_dir, manifest, settings.models.speaker_window)
                )
    finally:
        bar.close()
    report = _write_report(out, rows, results, meta, time.perf_counter() - started, figures=True)
    log.info("comparison: wrote %s", out / "results.md")
    return report


def _write_report(
    out: Path,
    rows: Sequence[ComparisonRow],
    results: Mapping[str, list[dict[str, Any]]],
    meta: Mapping[str, Any],
    seconds: float,
    figures: bool,
) -> dict[str, Any]:
    """``results.json`` and ``results.md`` (and, with ``figures``, the PNGs) from the runs so far."""
    table = _aggregate(rows, results)
    report = {**meta, "seconds": seconds, "complete": figures, "table": table, "findings": findings(table)}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(report))
    if figures and table:
        comparison_png(out / "comparison.png", table)
        for r in table:
            best = next(x for x in results[r["slug"]] if x["seed"] == r["best_seed"])
            test = Metrics.from_dict(best["test"])
            confusion_matrix_png(
                out / f"confusion_{r['slug']}.png",
                test.confusion,
                test.class_names,
                title=f"{r['label']} (seed {r['best_seed']}, best validation F1)",
            )
    return report


# ---- command line: emotion compare ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``emotion compare``."""
    parser.description = (
        "Reproduce the paper's comparison table: train every model of training/recipes/comparison.yaml "
        "(BiLSTM text, CNN speech, MLP graph, early and late fusion, CA-MoE and SP-MoE alone, the proposed "
        "model with top-1 and top-2 gating) over several seeds on the same cached features, evaluate on "
        "the test split and write results.json, results.md, confusion matrices and a bar chart. "
        "Finished runs are kept, so an interrupted comparison resumes where it stopped."
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="JSON-lines manifest with train/val/test splits (default: the synthetic corpus)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds 0..N-1 (default: the recipe's, 5)")
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: <home>/comparison/<corpus folder name>)"
    )
    parser.add_argument("--recipe", type=Path, default=DEFAULT_COMPARISON, help="comparison recipe (YAML)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="ROW",
        help="only these rows (labels, slugs such as proposed-top-1, or model names)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="training processes side by side, one torch thread each (default 1)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides for every row, e.g. train.epochs=30 data.text_source=manifest",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``emotion compare``: run the comparison and print the Markdown table; 0 on success."""
    if args.models:  # `--models a b key=value`: argparse hands the overrides to --models
        args.overrides = [*(m for m in args.models if "=" in m), *args.overrides]
        args.models = [m for m in args.models if "=" not in m] or None
    try:
        report = run_comparison(
            settings,
            args.manifest,
            args.out,
            None if args.seeds is None else range(args.seeds),
            args.models,
            recipe=args.recipe,
            overrides=args.overrides,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    print(results_markdown(report))
    return 0
