"""Prosodic features as an emotion representation: a speaker-independent probe on RAVDESS.

Every clip of RAVDESS actors 01-18 (``training.data.corpora.load_ravdess``: calm dropped, 7
classes, 936 clips) goes through a channel (``studio``: as recorded, 16 kHz; ``phone``: G.711
narrow band from :mod:`training.data.telephony`: 8 kHz, 300-3400 Hz band-pass, mu-law, back to
16 kHz, no noise), then through the utterance functionals of :mod:`shared.prosody` and, when the
``opensmile`` package is importable (research-only licence: never a dependency of this project),
openSMILE's eGeMAPSv02 functionals for comparison. A standardised logistic regression is
evaluated with leave-actors-out cross-validation (``--folds`` folds of whole actors) under three
normalisations of the features:

* ``global`` -- z-scores fitted on the training actors (the scaler of the classifier only);
* ``speaker-offline`` -- each actor z-scored with their own mean and SD over all of their clips,
  test actors included (transductive: a finished call, or the issue's probe);
* ``speaker-online`` -- the classifier of ``speaker-offline``; each test actor's clips arrive in a
  random order and clip ``k`` is z-scored with :class:`shared.speaker_norm.OnlineSpeakerNormaliser`
  (clips ``0..k-1`` only, shrunk towards a prior fitted on the training actors; the first clip uses
  the prior alone). Repeated over ``--orders`` random orders; also reported by how many of the
  speaker's clips had been seen.

Features are cached per extractor and channel (``--cache``, default ``var/cache/prosody-probe``).
Writes ``<out>.json``, ``<out>.md`` and ``<out>-confusion.png`` (the best row's pooled predictions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from shared.prosody import FUNCTIONAL_NAMES, ProsodyOptions, extract_functionals
from shared.settings import EMOTIONS, PROJECT_ROOT, Settings
from shared.speaker_norm import FeaturePrior, OnlineSpeakerNormaliser, normalise_per_speaker
from training.data.audio import load_audio
from training.data.corpora import load_ravdess
from training.data.telephony import Channel, apply_channel

log = logging.getLogger("emotion.prosody_probe")

DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "ravdess"
CACHE = PROJECT_ROOT / "var" / "cache" / "prosody-probe"
OUT = PROJECT_ROOT / "benchmarks" / "results" / "prosody-probe"
SAMPLE_RATE = 16_000
PHONE = Channel(
    telephony=True, noise=None, snr_db=None, gain_db=0.0, drift_db=0.0, drift_hz=0.0, clip=None, mu_law=True
)
"""G.711 narrow band without noise: 8 kHz, 300-3400 Hz band-pass, mu-law (deterministic)."""
PHONE_DESCRIPTION = (
    "G.711 narrow band: resampled to 8 kHz, 300-3400 Hz band-pass, mu-law 8 bit, back to 16 kHz, no noise"
)
NORMALISATIONS = ("global", "speaker-offline", "speaker-online")
SEEN_BUCKETS = ((0, 0), (1, 4), (5, 19), (20, None))
"""Online rows by how many of the speaker's clips came before: 0, 1-4, 5-19, 20 and more."""
OPENSMILE_PAIRS = (
    ("f0_mean", "F0semitoneFrom27.5Hz_sma3nz_amean"),
    ("f0_p50", "F0semitoneFrom27.5Hz_sma3nz_percentile50.0"),
    ("f0_range_20_80", "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2"),
    ("loudness_mean", "loudness_sma3_amean"),
    ("jitter_local_mean", "jitterLocal_sma3nz_amean"),
    ("shimmer_local_mean", "shimmerLocaldB_sma3nz_amean"),
    ("hnr_db_mean", "HNRdBACF_sma3nz_amean"),
    ("alpha_ratio_db_mean_voiced", "alphaRatioV_sma3nz_amean"),
    ("hammarberg_db_mean_voiced", "hammarbergIndexV_sma3nz_amean"),
    ("loudness_peaks_per_s", "loudnessPeaksPerSec"),
    ("voiced_segments_per_s", "VoicedSegmentsPerSec"),
    ("voiced_segment_mean_s", "MeanVoicedSegmentLengthSec"),
    ("equivalent_sound_level_db", "equivalentSoundLevel_dBp"),
)
"""Our functional and openSMILE's eGeMAPSv02 counterpart (shimmer: ours relative, theirs in dB)."""


# ---- features -------------------------------------------------------------------------------------------


def opensmile_available() -> bool:
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return False
    return True


def through_channel(path: str | Path, channel: str) -> np.ndarray:
    """The clip at 16 kHz, through ``channel`` (``studio`` or ``phone``)."""
    audio = load_audio(path, SAMPLE_RATE)
    if channel == "phone":
        audio = apply_channel(audio, SAMPLE_RATE, PHONE, np.random.default_rng(0), out_sr=SAMPLE_RATE)
    return audio


def _egemaps() -> Any:
    import opensmile

    return opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)


def extractor_version(name: str) -> str:
    """What the cached features depend on besides the audio: the extractor's code and settings."""
    if name == "prosody":
        source = (PROJECT_ROOT / "shared" / "prosody.py").read_bytes()
        return f"prosody:{hashlib.sha256(source).hexdigest()[:16]}:{ProsodyOptions()!r}"
    import opensmile

    return f"opensmile:{opensmile.__version__}:eGeMAPSv02"


def feature_names(name: str) -> list[str]:
    return list(FUNCTIONAL_NAMES) if name == "prosody" else list(_egemaps().feature_names)


def make_extractor(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """``audio -> functionals`` of extractor ``name`` (``prosody`` or ``egemaps``)."""
    if name == "prosody":
        return extract_functionals
    smile = _egemaps()
    return lambda audio: smile.process_signal(audio, SAMPLE_RATE).to_numpy()[0]


_WORKER: dict[str, Any] = {}


def _init_worker(extractors: Sequence[str], channel: str) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _WORKER["channel"] = channel
    _WORKER["extractors"] = {name: make_extractor(name) for name in extractors}


def _extract(path: str) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    """One clip: each extractor's vector, its CPU seconds, and the clip's duration."""
    audio = through_channel(path, _WORKER["channel"])
    vectors, cpu = {}, {}
    for name, extract in _WORKER["extractors"].items():
        t0 = time.process_time()
        vectors[name] = np.asarray(extract(audio), dtype=np.float32)
        cpu[name] = time.process_time() - t0
    return vectors, cpu, audio.size / SAMPLE_RATE


@dataclass
class FeatureTable:
    """One extractor's functionals of every clip, in the examples' order."""

    extractor: str
    names: list[str]
    values: np.ndarray
    """float32 ``[clips, features]``."""
    cpu_s: float
    """CPU seconds the extractor took over all clips (when computed; cached tables keep the figure)."""
    audio_s: float


def _cache_path(cache: Path, extractor: str, channel: str, paths: Sequence[Path]) -> Path:
    h = hashlib.sha256(extractor_version(extractor).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return cache / f"{extractor}-{channel}-{h.hexdigest()[:16]}.npz"


def feature_tables(
    paths: Sequence[Path], extractors: Sequence[str], channel: str, cache: Path, workers: int
) -> dict[str, FeatureTable]:
    """Each extractor's :class:`FeatureTable`, from the cache or computed (``workers`` processes)."""
    from tqdm.auto import tqdm

    tables: dict[str, FeatureTable] = {}
    files = {name: _cache_path(cache, name, channel, paths) for name in extractors}
    for name, file in files.items():
        if file.is_file():
            with np.load(file) as z:
                tables[name] = FeatureTable(name, list(z["names"]), z["values"], float(z["cpu_s"]), float(z["audio_s"]))
            log.info("%s: %d clips from %s", name, len(paths), file)
    todo = [name for name in extractors if name not in tables]
    if not todo:
        return {name: tables[name] for name in extractors}
    values: dict[str, list[np.ndarray]] = {name: [] for name in todo}
    cpu = dict.fromkeys(todo, 0.0)
    audio_s = 0.0
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(todo, channel)) as pool:  # fmt: skip
        results = pool.map(_extract, [str(p) for p in paths], chunksize=8)
        for vectors, seconds, duration in tqdm(results, total=len(paths), desc=f"features ({channel})", unit="clip"):
            for name in todo:
                values[name].append(vectors[name])
                cpu[name] += seconds[name]
            audio_s += duration
    cache.mkdir(parents=True, exist_ok=True)
    for name in todo:
        table = FeatureTable(name, feature_names(name), np.stack(values[name]), cpu[name], audio_s)
        np.savez(files[name], names=np.array(table.names), values=table.values, cpu_s=table.cpu_s, audio_s=audio_s)
        tables[name] = table
        log.info("%s: %.1f ms CPU per second of audio", name, 1000 * table.cpu_s / audio_s)
    return {name: tables[name] for name in extractors}


# ---- evaluation -----------------------------------------------------------------------------------------


def actor_folds(speakers: Sequence[str], n_folds: int, seed: int) -> list[np.ndarray]:
    """``n_folds`` disjoint groups of whole speakers (shuffled with ``seed``), as row indices."""
    speakers = np.asarray(speakers)
    unique = np.random.default_rng(seed).permutation(np.unique(speakers))
    if not 2 <= n_folds <= unique.size:
        raise ValueError(f"need 2 <= folds <= {unique.size} speakers, got {n_folds}")
    return [np.flatnonzero(np.isin(speakers, group)) for group in np.array_split(unique, n_folds)]


def classifier(c: float) -> Any:
    """Standardised multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def online_features(
    x: np.ndarray, speakers: np.ndarray, rows: np.ndarray, prior: FeaturePrior, prior_weight: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``rows`` normalised online, each speaker's clips in a random order: ``(rows in processing
    order, their features, clips of the speaker seen before each)``."""
    order, out, seen = [], [], []
    for speaker in np.unique(speakers[rows]):
        mine = rng.permutation(rows[speakers[rows] == speaker])
        norm = OnlineSpeakerNormaliser(prior, prior_weight)
        for k, i in enumerate(mine):
            order.append(i)
            out.append(norm(x[i]))
            seen.append(k)
    return np.asarray(order), np.asarray(out), np.asarray(seen)


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    f1 = f1_score(y, pred, average="weighted", zero_division=0)
    return {"f1": float(f1), "accuracy": float(accuracy_score(y, pred))}


def evaluate(
    x: np.ndarray, y: np.ndarray, speakers: np.ndarray, folds: Sequence[np.ndarray], *, c: float,
    prior_weights: Sequence[float], orders: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Per normalisation: the scores of every fold, their mean and SD, and the confusion matrix
    pooled over the folds; online rows also by clips seen and per prior weight (the first is the
    main row)."""
    from sklearn.metrics import confusion_matrix

    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    per_speaker = normalise_per_speaker(x, speakers)
    labels = np.arange(int(y.max()) + 1)
    rows = {name: {"folds": [], "y": [], "pred": []} for name in ("global", "speaker-offline")}
    online = {k0: {"folds": [], "y": [], "pred": [], "seen": []} for k0 in prior_weights}
    every = np.arange(len(y))
    for f, test in enumerate(folds):
        train = np.setdiff1d(every, test)
        models = {}
        for name, features in (("global", x), ("speaker-offline", per_speaker)):
            models[name] = classifier(c).fit(features[train], y[train])
            pred = models[name].predict(features[test])
            rows[name]["folds"].append(_scores(y[test], pred))
            rows[name]["y"].append(y[test])
            rows[name]["pred"].append(pred)
        prior = FeaturePrior.fit(x[train], speakers[train])
        for k0 in prior_weights:
            rng = np.random.default_rng([seed, f])  # the same orders for every k0
            fold_scores = []
            for _ in range(orders):
                order, features, seen = online_features(x, speakers, test, prior, k0, rng)
                pred = models["speaker-offline"].predict(features)
                fold_scores.append(_scores(y[order], pred))
                for key, value in (("y", y[order]), ("pred", pred), ("seen", seen)):
                    online[k0][key].append(value)
            online[k0]["folds"].append({m: float(np.mean([s[m] for s in fold_scores])) for m in ("f1", "accuracy")})
    main_k0 = prior_weights[0]
    rows["speaker-online"] = online[main_k0]
    result: dict[str, Any] = {}
    for name, r in rows.items():
        cm = confusion_matrix(np.concatenate(r["y"]), np.concatenate(r["pred"]), labels=labels)
        result[name] = _summary(r["folds"]) | {"confusion": cm.tolist()}
    result["speaker-online"]["prior_weight"] = main_k0
    yy, pp, ss = (np.concatenate(online[main_k0][k]) for k in ("y", "pred", "seen"))
    by_seen = []
    for lo, hi in SEEN_BUCKETS:
        pick = (ss >= lo) & (ss <= (np.inf if hi is None else hi))
        label = str(lo) if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        by_seen.append({"seen": label, "n": int(pick.sum())} | _scores(yy[pick], pp[pick]))
    result["online_by_seen"] = by_seen
    result["online_prior_weights"] = [{"prior_weight": k0} | _summary(online[k0]["folds"]) for k0 in prior_weights]
    return result


def _summary(folds: Sequence[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"folds": list(folds)}
    for m in ("f1", "accuracy"):
        v = np.array([s[m] for s in folds])
        out[m] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0}
    return out


def opensmile_agreement(ours: FeatureTable, theirs: FeatureTable, speakers: np.ndarray) -> list[dict[str, Any]]:
    """Pearson and Spearman correlation over the clips of each :data:`OPENSMILE_PAIRS` pair, and the
    Pearson correlation within speakers (both centred on each speaker's mean)."""
    from scipy.stats import spearmanr

    out = []
    for mine, smile in OPENSMILE_PAIRS:
        a = ours.values[:, ours.names.index(mine)].astype(np.float64)
        b = theirs.values[:, theirs.names.index(smile)].astype(np.float64)
        a_c, b_c = a.copy(), b.copy()
        for s in np.unique(speakers):
            rows = speakers == s
            a_c[rows] -= a[rows].mean()
            b_c[rows] -= b[rows].mean()
        out.append({
            "ours": mine,
            "opensmile": smile,
            "pearson": float(np.corrcoef(a, b)[0, 1]),
            "spearman": float(spearmanr(a, b).statistic),
            "pearson_within_speaker": float(np.corrcoef(a_c, b_c)[0, 1]),
        })  # fmt: skip
    return out


def channel_robustness(phone: dict[str, FeatureTable], studio: dict[str, FeatureTable]) -> dict[str, Any]:
    """How well each functional survives the phone channel: Pearson r over the clips between its
    phone and studio values, for the :data:`OPENSMILE_PAIRS` and as the median over all functionals."""

    def r(name: str, feature: str) -> float | None:
        if name not in phone:
            return None
        i = phone[name].names.index(feature)
        a, b = phone[name].values[:, i].astype(np.float64), studio[name].values[:, i].astype(np.float64)
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None

    pairs = [{"ours": mine, "opensmile": smile, "ours_r": r("prosody", mine), "opensmile_r": r("egemaps", smile)}
             for mine, smile in OPENSMILE_PAIRS]  # fmt: skip
    medians = {}
    for name, table in phone.items():
        values = [r(name, f) for f in table.names]
        medians[name] = float(np.median([v for v in values if v is not None]))
    return {"pairs": pairs, "median": medians}


# ---- report ---------------------------------------------------------------------------------------------


def _pm(s: dict[str, float]) -> str:
    return f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: int) -> list[str]:
    """A Markdown table; the last ``right`` columns right-aligned."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    return [f"| {' | '.join(header)} |", f"| {' | '.join(align)} |"] + [f"| {' | '.join(map(str, r))} |" for r in rows]


def report_markdown(report: dict[str, Any]) -> str:
    cfg, results = report["config"], report["results"]
    counts = ", ".join(f"{k} {v}" for k, v in report["class_counts"].items())
    lines = [
        f"# Prosodic features: speaker-independent emotion probe on RAVDESS ({cfg['channel']} channel)",
        "",
        f"`{report['command']}` ({report['finished']}, {report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores; {report['elapsed_s']:.0f} s in all).",
        "",
        f"RAVDESS actors 01-18, calm dropped: {report['clips']} clips, {len(report['classes'])} classes ({counts}). "
        f"Channel `{cfg['channel']}`: {report['channel_description']}. Standardised logistic regression "
        f"(C = {cfg['C']}), {cfg['folds']} folds of whole actors (seed {cfg['seed']}): mean ± SD over the folds, in %. "
        "`global`: z-scores fitted on the training actors; `speaker-offline`: every actor z-scored with their own "
        "mean and SD over all of their clips; `speaker-online`: the `speaker-offline` classifier, each test actor's "
        "clips in a random order, clip k normalised with clips 0..k-1 shrunk towards the training actors' prior "
        f"(k0 = {report['prior_weights'][0]:g} pseudo-clips), {cfg['orders']} random orders per fold.",
        "",
    ]
    lines += _table(
        ["features", "normalisation", "weighted F1", "accuracy"],
        [(f"{name} ({res['n_features']})", norm, _pm(res[norm]["f1"]), _pm(res[norm]["accuracy"]))
         for name, res in results.items() for norm in NORMALISATIONS],
        2,
    )  # fmt: skip
    lines += ["", "`speaker-online` by how many of the speaker's clips came before (pooled over folds and orders):", ""]
    lines += _table(
        ["features", "clips seen", "n", "weighted F1", "accuracy"],
        [(name, b["seen"], b["n"], f"{100 * b['f1']:.1f}", f"{100 * b['accuracy']:.1f}")
         for name, res in results.items() for b in res["online_by_seen"]],
        3,
    )  # fmt: skip
    lines += ["", "`speaker-online` against the prior weight k0:", ""]
    lines += _table(
        ["features", "k0", "weighted F1", "accuracy"],
        [(name, f"{r['prior_weight']:g}", _pm(r["f1"]), _pm(r["accuracy"]))
         for name, res in results.items() for r in res["online_prior_weights"]],
        3,
    )  # fmt: skip
    lines += ["", "Extraction cost (in the worker processes; decoding and channel simulation excluded):", ""]
    lines += _table(
        ["features", "ms CPU per second of audio"],
        [(name, f"{res['cpu_ms_per_audio_s']:.1f}") for name, res in results.items()],
        1,
    )
    if report.get("opensmile_agreement"):
        lines += ["", "openSMILE (research-only licence, not a dependency of this project) was importable from the "
                  "interpreter that ran this, e.g. a throwaway virtual environment layered on `.venv`."]
        lines += ["", f"Agreement with openSMILE {report['opensmile_version']} eGeMAPSv02 on the same audio "
                  f"({report['clips']} clips; within speaker: both centred on each actor's mean):", ""]  # fmt: skip
        lines += _table(
            ["ours", "openSMILE", "Pearson r", "Spearman rho", "r within speaker"],
            [(f"`{a['ours']}`", f"`{a['opensmile']}`", f"{a['pearson']:.2f}", f"{a['spearman']:.2f}",
              f"{a['pearson_within_speaker']:.2f}") for a in report["opensmile_agreement"]],
            3,
        )  # fmt: skip
    elif report.get("opensmile_note"):
        lines += ["", report["opensmile_note"]]
    if report.get("channel_robustness"):
        rob = report["channel_robustness"]
        medians = ", ".join(f"{k} {v:.2f}" for k, v in rob["median"].items())
        lines += ["", "Channel robustness: Pearson r between each functional on the phone channel and on the studio "
                  f"original of the same clips (median over all functionals: {medians}):", ""]  # fmt: skip
        lines += _table(
            ["ours", "r", "openSMILE", "r"],
            [(f"`{a['ours']}`", _r(a["ours_r"]), f"`{a['opensmile']}`", _r(a["opensmile_r"])) for a in rob["pairs"]],
            0,
        )
    best = report["best"]
    lines += ["", f"Confusion matrix of the best row ({best['features']}, {best['normalisation']}), pooled over the "
              f"folds: `{Path(report['confusion_png']).name}`."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---- command line ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = __doc__.split("\n\n")[0]
    parser.epilog = (
        "Each test actor is unseen in training (leave-actors-out). openSMILE rows appear when the opensmile\n"
        "package is importable (research-only licence: install it in a throwaway environment, never here).\n\n"
        "examples:  python -m benchmarks.prosody_probe                      (phone channel, ~3 min on 2 cores)\n"
        "           python -m benchmarks.prosody_probe --channel studio --out /tmp/probe-studio\n"
        "           python -m benchmarks.prosody_probe --folds 18 --orders 20   (leave one actor out)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--dataset", type=Path, default=DATASET, help=f"RAVDESS folder (default {DATASET})")
    parser.add_argument("--channel", choices=["studio", "phone"], default="phone",
                        help="studio: the clips as recorded; phone: G.711 narrow band (default)")  # fmt: skip
    parser.add_argument("--folds", type=int, default=6, help="cross-validation folds of whole actors (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and the online orders")
    parser.add_argument("--orders", type=int, default=5,
                        help="random clip orders per test actor for the online rows (default 5)")
    parser.add_argument("--prior-weights", type=float, nargs="+", default=[8.0, 2.0, 32.0], metavar="K0",
                        help="online prior weights in pseudo-clips, the first is the main row (default 8 2 32)")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation of the logistic regression")
    parser.add_argument("--no-opensmile", action="store_true", help="skip the openSMILE eGeMAPS comparison")
    parser.add_argument("--no-robustness", action="store_true",
                        help="phone channel: skip the studio features and phone-vs-studio correlations")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="extraction processes")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"feature cache (default {CACHE})")
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"output stem: <out>.json, <out>.md, <out>-confusion.png (default {OUT})")  # fmt: skip
    return parser


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from training.compare import machine_description
    from training.evaluate import confusion_matrix_png

    t0 = time.perf_counter()
    examples = load_ravdess(args.dataset)
    classes = [e for e in EMOTIONS if any(x.label == e for x in examples)]
    y = np.array([classes.index(e.label) for e in examples])
    speakers = np.array([e.speaker for e in examples])
    extractors = ["prosody"]
    note = None
    if args.no_opensmile:
        note = "openSMILE comparison skipped (--no-opensmile)."
    elif opensmile_available():
        extractors.append("egemaps")
    else:
        note = "openSMILE is not installed here: no eGeMAPS rows (see --help)."
    tables = feature_tables([e.audio_path for e in examples], extractors, args.channel, args.cache, args.workers)
    folds = actor_folds(speakers, args.folds, args.seed)
    results: dict[str, Any] = {}
    for name, table in tables.items():
        label = "prosody" if name == "prosody" else "eGeMAPSv02 (openSMILE)"
        log.info("evaluating %s", label)
        scores = evaluate(table.values, y, speakers, folds, c=args.C, prior_weights=args.prior_weights,
                          orders=args.orders, seed=args.seed)  # fmt: skip
        results[label] = {"n_features": table.values.shape[1], "cpu_ms_per_audio_s": 1000 * table.cpu_s / table.audio_s}
        results[label] |= scores
    best_features, best_norm = max(
        ((f, n) for f in results for n in NORMALISATIONS), key=lambda fn: results[fn[0]][fn[1]]["f1"]["mean"]
    )
    cm = results[best_features][best_norm]["confusion"]
    png = confusion_matrix_png(Path(f"{args.out}-confusion.png"), cm, classes,
                               title=f"{best_features}, {best_norm} ({args.channel})")  # fmt: skip
    report: dict[str, Any] = {
        "command": command,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "config": {
            "dataset": str(args.dataset),
            "channel": args.channel,
            "folds": args.folds,
            "seed": args.seed,
            "orders": args.orders,
            "C": args.C,
        },
        "channel_description": PHONE_DESCRIPTION if args.channel == "phone" else "as recorded (16 kHz)",
        "clips": len(examples),
        "classes": classes,
        "class_counts": {c: int(np.sum(y == i)) for i, c in enumerate(classes)},
        "folds": [sorted(set(speakers[f].tolist())) for f in folds],
        "prior_weights": list(args.prior_weights),
        "results": results,
        "best": {"features": best_features, "normalisation": best_norm},
        "confusion_png": str(png),
        "prosody_options": repr(ProsodyOptions()),
    }
    if args.channel == "phone" and not args.no_robustness:
        studio = feature_tables([e.audio_path for e in examples], extractors, "studio", args.cache, args.workers)
        report["channel_robustness"] = channel_robustness(tables, studio)
    if "egemaps" in tables:
        import opensmile

        report["opensmile_version"] = opensmile.__version__
        report["opensmile_agreement"] = opensmile_agreement(tables["prosody"], tables["egemaps"], speakers)
    else:
        report["opensmile_note"] = note
    report["elapsed_s"] = time.perf_counter() - t0
    return report


def main(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``emotion prosody-probe`` (``settings`` unused: the probe reads the corpus folder it is given)."""
    if not args.dataset.is_dir():
        raise SystemExit(f"{args.dataset}: no such folder (RAVDESS Actor_NN folders expected)")
    command = f"emotion prosody-probe --channel {args.channel} --folds {args.folds} --seed {args.seed}"
    report = run(args, command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(report_markdown(report))
    print(report_markdown(report))
    return 0


if __name__ == "__main__":
    from shared.logs import configure_logging

    configure_logging("INFO")
    sys.exit(main(add_arguments(argparse.ArgumentParser(prog="python -m benchmarks.prosody_probe")).parse_args()))
