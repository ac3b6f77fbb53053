"""Evaluation of a trained emotion model: metrics, confusion matrix, summaries over seeds.

* :func:`evaluate` -- accuracy, weighted precision / recall / F1 (the paper's metrics), the
  per-class report (scikit-learn's ``classification_report`` dict) and the confusion matrix;
* :func:`confusion_matrix_png` -- the confusion matrix as a PNG (rows normalised, counts annotated);
* :func:`summarise_seeds` -- mean, standard deviation and t-distribution confidence interval of
  each metric over training seeds;
* :func:`breakdown` -- the same metrics per group (language, synthetic-corpus cue, ...).

``emotion eval`` is :func:`main` (arguments: :func:`add_arguments`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.data.telephony import CONDITIONS
from training.models import EmotionModel, collate

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings
    from training.data.manifest import Example
    from training.features import FeatureRecord

__all__ = [
    "METRIC_NAMES",
    "Metrics",
    "Predictions",
    "SeedSummary",
    "add_arguments",
    "breakdown",
    "confusion_matrix_png",
    "evaluate",
    "main",
    "metrics_from_predictions",
    "predict",
    "summarise_seeds",
    "summarise_values",
]

log = logging.getLogger("training.evaluate")

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "f1")
"""The summary metrics; precision, recall and F1 are support-weighted averages over the classes."""


# ---- metrics --------------------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Classification metrics of one model on one set of utterances."""

    accuracy: float
    precision: float
    """Weighted (by class support) precision."""
    recall: float
    """Weighted recall (equals accuracy)."""
    f1: float
    """Weighted F1."""
    report: dict[str, Any]
    """``sklearn.metrics.classification_report(..., output_dict=True)``: per class and averages."""
    confusion: list[list[int]]
    """``[true class][predicted class]`` counts."""
    class_names: list[str]
    n: int
    loss: float | None = None
    """Mean cross-entropy of the fused prediction, when computed from model outputs."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        return cls(**data)

    def summary(self) -> dict[str, float]:
        """The :data:`METRIC_NAMES` values."""
        return {name: float(getattr(self, name)) for name in METRIC_NAMES}


def metrics_from_predictions(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    loss: float | None = None,
) -> Metrics:
    """:class:`Metrics` of class-index predictions (every class of ``class_names`` is reported,
    absent ones with zero support)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    labels = list(range(len(class_names)))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=list(class_names), output_dict=True, zero_division=0
    )
    return Metrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        precision=float(p),
        recall=float(r),
        f1=float(f),
        report=_plain(report),
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        class_names=list(class_names),
        n=int(len(y_true)),
        loss=loss,
    )


def _plain(obj: Any) -> Any:
    """numpy scalars -> Python numbers, recursively (JSON/YAML-safe)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---- predictions ----------------------------------------------------------------------------------------


@dataclass
class Predictions:
    y_true: np.ndarray
    """``[N]`` class indices (``-1`` where an utterance has no label)."""
    y_pred: np.ndarray
    """``[N]`` argmax of the fused probabilities."""
    probs: np.ndarray
    """``[N, C]`` fused probabilities."""
    loss: float | None
    """Mean cross-entropy of the fused logits over the labelled utterances."""
    branch_probs: dict[str, np.ndarray] = field(default_factory=dict)
    """``[N, C]`` each branch's own probabilities before the late fusion (the fused models'
    ``FusionOutput.branch_logits``: CA-MoE, SP-MoE, the voice statistics; per modality for the
    late-fusion baseline)."""

    def branch_metrics(self, class_names: Sequence[str]) -> dict[str, Metrics]:
        """Each branch judged alone on the labelled utterances."""
        keep = self.y_true >= 0
        return {
            name: metrics_from_predictions(self.y_true[keep], probs[keep].argmax(1), class_names)
            for name, probs in self.branch_probs.items()
        }


def _label(record: Any) -> int:
    y = record.get("label") if isinstance(record, dict) else getattr(record, "label", None)
    return -1 if y is None else int(y)


def predict(model: EmotionModel, features: Sequence[Any], batch_size: int = 64) -> Predictions:
    """Run ``model`` (eval mode, no gradients) over ``features`` (records with integer labels)."""
    config = model.config
    was_training = model.training
    model.eval()
    probs, losses = [], []
    branches: dict[str, list[np.ndarray]] = {}
    try:
        with torch.inference_mode():
            for lo in range(0, len(features), batch_size):
                part = [dict(_fields(r), label=None) for r in features[lo : lo + batch_size]]
                out = model(collate(part, edge_rule=config.edge_rule, class_names=config.class_names))
                probs.append(out.probs.float().cpu().numpy())
                for name, logits in out.branch_logits.items():
                    branches.setdefault(name, []).append(torch.softmax(logits.float(), -1).cpu().numpy())
                y = torch.tensor([_label(r) for r in features[lo : lo + batch_size]])
                keep = y >= 0
                if keep.any():
                    losses.append(
                        torch.nn.functional.cross_entropy(out.logits[keep].float(), y[keep], reduction="sum").item()
                    )
    finally:
        model.train(was_training)
    p = np.concatenate(probs) if probs else np.zeros((0, config.n_classes), np.float32)
    y_true = np.array([_label(r) for r in features], int)
    n_labelled = int((y_true >= 0).sum())
    return Predictions(
        y_true,
        p.argmax(1),
        p,
        sum(losses) / n_labelled if n_labelled else None,
        {name: np.concatenate(parts) for name, parts in branches.items()},
    )


def _fields(record: Any) -> dict[str, Any]:
    """The ``UtteranceFeatures`` fields of a record (collate's input) as a mapping."""
    if isinstance(record, dict):
        return record
    names = (
        "text_hidden",
        "text_mask",
        "token_offsets",
        "speech_frames",
        "speech_mask",
        "frame_times",
        "transcript",
        "words",
        "word_spans",
    )
    return {k: getattr(record, k) for k in names}


def evaluate(model: EmotionModel, features: Sequence[Any], batch_size: int = 64) -> Metrics:
    """Accuracy, weighted precision / recall / F1, per-class report and confusion matrix of
    ``model`` on ``features`` (every record needs an integer ``label``)."""
    pred = predict(model, features, batch_size)
    if (pred.y_true < 0).any():
        raise ValueError("evaluate() needs a label on every utterance")
    return metrics_from_predictions(pred.y_true, pred.y_pred, model.config.class_names, pred.loss)


def breakdown(
    features: Sequence[Any],
    y_pred: Sequence[int] | np.ndarray,
    key: str | Callable[[Any], Any],
    class_names: Sequence[str],
) -> dict[str, Metrics]:
    """Metrics per group of ``features`` (``key``: a record attribute such as ``"language"`` or
    ``"cue"``, or a function of the record); records whose key is None are left out."""
    get = key if callable(key) else (lambda r: getattr(r, key, None))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(features):
        g = get(r)
        if g is not None:
            groups[str(g)].append(i)
    y_true = np.array([_label(r) for r in features], int)
    y_pred = np.asarray(y_pred, int)
    return {g: metrics_from_predictions(y_true[idx], y_pred[idx], class_names) for g, idx in sorted(groups.items())}


# ---- confusion matrix figure ----------------------------------------------------------------------------


def confusion_matrix_png(
    path: str | Path, cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str], title: str | None = None
) -> Path:
    """Write the confusion matrix as a PNG: cells coloured by the row-normalised rate (recall of the
    true class), annotated with the count and the percentage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(cm, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * n, 0.8 + 0.8 * n), dpi=120)
    try:
        image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title)
        for i in range(n):
            for j in range(n):
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}\n{100 * rates[i, j]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=colour,
                )
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row-normalised")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


# ---- summaries over seeds -------------------------------------------------------------------------------


@dataclass
class SeedSummary:
    """Mean, sample standard deviation and t-distribution confidence interval of one metric."""

    mean: float
    sd: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95
    values: list[float] = field(default_factory=list)

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"83.2 ± 1.4 [81.5, 84.9]"`` (percent by default)."""
        f = f"{{:.{digits}f}}"
        return (
            f"{f.format(self.mean * scale)} ± {f.format(self.sd * scale)} "
            f"[{f.format(self.ci_low * scale)}, {f.format(self.ci_high * scale)}]"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_values(values: Iterable[float], confidence: float = 0.95) -> SeedSummary:
    """:class:`SeedSummary` of raw values: ``mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)``; with a
    single value the SD is 0 and the interval is the value itself."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("no values to summarise")
    mean = statistics.fmean(v)
    if len(v) < 2:
        return SeedSummary(mean, 0.0, mean, mean, 1, confidence, v)
    from scipy.stats import t  # scikit-learn's dependency

    sd = statistics.stdev(v)
    half = float(t.ppf((1.0 + confidence) / 2.0, len(v) - 1)) * sd / math.sqrt(len(v))
    return SeedSummary(mean, sd, mean - half, mean + half, len(v), confidence, v)


def summarise_seeds(metrics: Sequence[Metrics | dict[str, float]], confidence: float = 0.95) -> dict[str, SeedSummary]:
    """Per metric of :data:`METRIC_NAMES`: mean, SD and the ``confidence`` interval (Student's t
    with ``n - 1`` degrees of freedom) over the seeds' :class:`Metrics` (or plain dicts)."""
    rows = [m.summary() if isinstance(m, Metrics) else m for m in metrics]
    return {name: summarise_values([r[name] for r in rows], confidence) for name in METRIC_NAMES}


# ---- command line: emotion eval -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``emotion eval``."""
    parser.description = (
        "Evaluate a trained emotion model on a manifest: accuracy, weighted precision / recall / F1, "
        "the per-class report and a confusion-matrix PNG. Features are extracted with the model's "
        "encoders (cached under <home>/features)."
    )
    parser.add_argument("--manifest", type=Path, required=True, help="JSON-lines manifest of labelled utterances")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="trained model folder (default: <home>/trained/default, the served model)",
    )
    parser.add_argument(
        "--split",
        default="auto",
        choices=["auto", "all", "train", "val", "test"],
        help="utterances to evaluate: auto = the test split when the manifest has one, else all",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for metrics.json and confusion_matrix.png (default: <model>/eval/<manifest folder>[-<channel>])",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the metrics as one JSON object on stdout (nothing else goes to stdout)",
    )
    parser.add_argument(
        "--channel",
        default="none",
        choices=CONDITIONS,
        help="listen to the utterances through a simulated line first: g711 = clean 8 kHz mu-law phone line, "
        "phone = a random line per utterance (noise, gain, clipping, mu-law; the same for an utterance every run); "
        "phone-voices = the same line after moving half the voices up to 3 semitones up or down (a training condition); "
        "the robustness conditions: the clean line with noise at 10 dB SNR, 20 dB quieter, or the voice shifted "
        "2 semitones up or down; default none",
    )
    parser.add_argument(
        "--by",
        choices=["corpus", "language", "cue"],
        default=None,
        help="also report the metrics per group: corpus (by the corpus loaders' id prefix; a corpus's "
        "lines spoken flat as '<corpus> spoken'; others grouped as 'other'), language, or cue (synthetic corpus: which modality carries the emotion)",
    )
    parser.add_argument("--workers", type=int, default=1, help="feature extraction processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def select_split(examples: Sequence[Any], split: str) -> list[Any]:
    """``auto``: the test split when any example has one, else all; ``all``; or a named split."""
    if split == "all":
        return list(examples)
    if split == "auto":
        test = [ex for ex in examples if ex.split == "test"]
        return test or list(examples)
    return [ex for ex in examples if ex.split == split]


def transcript_scores(examples: Sequence[Example], records: Sequence[FeatureRecord]) -> dict[str, float | int] | None:
    """Word and character error rates (:mod:`training.transcripts`) of the records' Whisper
    transcripts against the text of the spoken examples that have one; None when none has."""
    from training.transcripts import character_error_rate, word_error_rate

    text = {ex.id: ex.text for ex in examples if ex.audio_path is not None and (ex.text or "").strip()}
    pairs = [(text[r.id], r.asr_text) for r in records if r.id in text]
    if not pairs:
        return None
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"n": len(pairs), "wer": word_error_rate(refs, hyps), "cer": character_error_rate(refs, hyps)}


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``emotion eval``: evaluate a model folder on a manifest; 0 on success."""
    from training.checkpoint import load_model
    from training.data import read_manifest
    from training.encoders.speech import SpeechReading
    from training.features import extract_features, feature_spec

    real_stdout = sys.stdout
    # With --json, stdout carries exactly one JSON object: anything a library prints goes to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with redirect:
        model_dir = Path(args.model or settings.default_model_dir)
        model, meta = load_model(model_dir)
        training = meta.training or {}
        asr_model = training.get("asr_model")
        text_source = training.get("text_source", "asr")
        if meta.encoders.get("speech_encoder"):  # read the speech encoder as the model was trained
            settings = SpeechReading.of_version(meta.encoders["speech_encoder"]).applied(settings)
        current = feature_spec(settings, asr_model).encoders
        for role in ("text_encoder", "speech_encoder"):
            if meta.encoders.get(role) and meta.encoders[role] != current[role]:
                raise SystemExit(
                    f"{model_dir} was trained on {role} {meta.encoders[role]}, but the bundle has {current[role]}; "
                    "retrain the model or select the same encoder (settings.models)"
                )
        if meta.encoders.get("asr") and meta.encoders["asr"] != current["asr"]:
            log.warning("model trained with ASR %s, evaluating with %s", meta.encoders["asr"], current["asr"])
        examples = select_split(read_manifest(args.manifest, labels=meta.class_names), args.split)
        if not examples:
            raise SystemExit(f"{args.manifest}: no utterances in split {args.split!r}")
        features = extract_features(
            settings,
            examples,
            text_source=text_source,
            workers=args.workers,
            progress=not args.no_progress,
            asr_model=asr_model,
            class_names=meta.class_names,
            channel=args.channel,
        )
        pred = predict(model, features)
        metrics = metrics_from_predictions(pred.y_true, pred.y_pred, model.config.class_names, pred.loss)
        groups = _groups(features, pred.y_pred, metrics.class_names, args.by) if args.by else {}
        heard = "" if args.channel == "none" else f"-{args.channel}"
        out = Path(args.out) if args.out else model_dir / "eval" / (Path(args.manifest).resolve().parent.name + heard)
        out.mkdir(parents=True, exist_ok=True)
        result = {
            "model": str(model_dir),
            "manifest": str(args.manifest),
            "split": args.split,
            "channel": args.channel,
            **metrics.to_dict(),
        }
        if groups:
            result["by"] = {"key": args.by, "groups": {g: m.to_dict() for g, m in groups.items()}}
        branches = pred.branch_metrics(metrics.class_names) if len(pred.branch_probs) > 1 else {}
        if branches:
            result["branches"] = {name: m.to_dict() for name, m in branches.items()}
        heard_words = transcript_scores(examples, features) if text_source == "asr" else None
        if heard_words:
            result["transcripts"] = heard_words
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        png = confusion_matrix_png(
            out / "confusion_matrix.png",
            metrics.confusion,
            metrics.class_names,
            title=f"{meta.registry_name} on {Path(args.manifest).name}",
        )
        log.info("wrote %s and %s", out / "metrics.json", png)
    if args.json:
        print(json.dumps(result), file=real_stdout, flush=True)
    else:
        print(format_metrics(metrics, title=f"{meta.registry_name} ({model_dir}) on {args.manifest}"))
        if groups:
            print(f"\n{'by ' + args.by:<14} {'n':>6} {'accuracy':>9} {'F1':>7}")
            for g, m in groups.items():
                print(f"{g:<14} {m.n:>6} {m.accuracy:>9.4f} {m.f1:>7.4f}")
        if branches:
            print(f"\n{'each branch':<14} {'n':>6} {'accuracy':>9} {'F1':>7}   (alone, before the late fusion)")
            for name, m in branches.items():
                print(f"{name:<14} {m.n:>6} {m.accuracy:>9.4f} {m.f1:>7.4f}")
        if heard_words:
            print(
                f"\nWhisper's transcripts against the manifest text ({heard_words['n']} spoken utterances): "
                f"WER {heard_words['wer']:.3f}, CER {heard_words['cer']:.3f}"
            )
        print(f"\nconfusion matrix: {png}")
    return 0


def corpus_group(example_id: str) -> str:
    """The ``--by corpus`` group of an example: the corpus its id names (``other`` for none), and
    ``<corpus> spoken`` for a text line spoken flat (``emotion data speak``, a recipe's ``spoken:
    N``), so a mix that holds a corpus in both forms reports each form apart."""
    from training.data.corpora import corpus_of
    from training.data.spoken import SPOKEN_SUFFIX

    corpus = corpus_of(example_id) or "other"
    return f"{corpus} spoken" if example_id.endswith(SPOKEN_SUFFIX) else corpus


def _groups(features: Sequence[Any], y_pred: np.ndarray, class_names: Sequence[str], by: str) -> dict[str, Metrics]:
    """Per-group metrics of the evaluation (``--by``), from the same predictions."""
    key = (lambda r: corpus_group(r.id)) if by == "corpus" else by
    return breakdown(features, y_pred, key, class_names)


def format_metrics(metrics: Metrics, title: str | None = None) -> str:
    """Human-readable metrics: the summary line and the per-class table."""
    lines = [title] if title else []
    lines.append(
        f"n={metrics.n}  accuracy={metrics.accuracy:.4f}  weighted precision={metrics.precision:.4f}  "
        f"recall={metrics.recall:.4f}  F1={metrics.f1:.4f}"
    )
    lines.append(f"\n{'class':<12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name in metrics.class_names:
        r = metrics.report[name]
        lines.append(
            f"{name:<12} {r['precision']:>9.4f} {r['recall']:>9.4f} {r['f1-score']:>9.4f} {int(r['support']):>8}"
        )
    return "\n".join(lines)
