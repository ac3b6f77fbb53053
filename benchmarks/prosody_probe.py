"""Prosodic and speech-encoder features as emotion representations: a speaker-independent probe on RAVDESS.

Every clip of RAVDESS actors 01-18 (``training.data.corpora.load_ravdess``: calm dropped, 7
classes, 936 clips) goes through a channel (``studio``: as recorded, 16 kHz; ``phone``: G.711
narrow band from :mod:`training.data.telephony`: 8 kHz, 300-3400 Hz band-pass, mu-law, back to
16 kHz, no noise), then through

* the utterance functionals of :mod:`shared.prosody` (``prosody``);
* openSMILE's eGeMAPSv02 functionals for comparison (``egemaps``), when the ``opensmile`` package
  is importable (research-only licence: never a dependency of this project);
* the bundle's speech encoder (:meth:`training.encoders.speech.SpeechEncoder.encode_layers`, the
  unpadded clip as the product runs it): every layer's frames (Whisper: the convolutional front-end,
  then each transformer block, the last one the speech branch's input) pooled to their mean and SD.
  Feature sets (``--features``): ``encoder-last`` (the last layer), ``encoder-layers`` (every layer
  alone, then the best one's rows), ``encoder-weighted`` (a SUPERB-style softmax-weighted sum of the
  layers learned jointly with the classifier: :class:`LayerWeightedProbe`) and ``prosody+encoder``
  (the prosodic functionals beside the best layer).

A standardised logistic regression is evaluated with leave-actors-out cross-validation
(``--folds`` folds of whole actors) under three normalisations of the features:

* ``global`` -- z-scores fitted on the training actors (the scaler of the classifier only);
* ``speaker-offline`` -- each actor z-scored with their own mean and SD over all of their clips,
  test actors included (transductive: a finished call, or the issue's probe);
* ``speaker-online`` -- the classifier of ``speaker-offline``; each test actor's clips arrive in a
  random order and clip ``k`` is z-scored with :class:`shared.speaker_norm.OnlineSpeakerNormaliser`
  (clips ``0..k-1`` only, shrunk towards a prior fitted on the training actors; the first clip uses
  the prior alone). Repeated over ``--orders`` random orders; also reported by how many of the
  speaker's clips had been seen.

Features are cached per extractor and channel (``--cache``, default ``var/cache/prosody-probe``; the
encoder's statistics in float16).
Writes ``<out>.json``, ``<out>.md`` and ``<out>-confusion.png`` (the best row's pooled predictions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.files import content_digest
from shared.prosody import FUNCTIONAL_NAMES, ProsodyOptions, extract_functionals
from shared.settings import EMOTIONS, PROJECT_ROOT, Settings
from shared.speaker_norm import FeaturePrior, OnlineSpeakerNormaliser, normalise_per_speaker
from training.data.audio import load_audio
from training.data.corpora import load_ravdess
from training.data.telephony import Channel, apply_channel

if TYPE_CHECKING:  # pragma: no cover
    from training.model_store import ResolvedModel
    from training.encoders.speech import SpeechEncoder

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
FEATURE_SETS = ("prosody", "egemaps", "encoder-last", "encoder-layers", "encoder-weighted", "prosody+encoder")
"""What ``--features`` names: ``encoder-layers`` evaluates every layer alone and reports the best one
(by speaker-offline weighted F1) in full; ``prosody+encoder`` is the prosody functionals beside that layer."""
EXTRACTORS = {
    "prosody": ("prosody",),
    "egemaps": ("egemaps",),
    "encoder-last": ("encoder",),
    "encoder-layers": ("encoder",),
    "encoder-weighted": ("encoder",),
    "prosody+encoder": ("prosody", "encoder"),
}
"""The extractors (cached feature tables) each feature set reads."""
FUNCTIONALS = ("prosody", "egemaps")
"""Extractors of named utterance functionals (also measured on the studio audio for channel robustness)."""
EXTRACTOR_LABELS = {"prosody": "prosody", "egemaps": "eGeMAPSv02 (openSMILE)", "encoder": "speech encoder (all layers)"}
"""How the report names each extractor (and the rows of the functionals)."""
STORAGE_DTYPE = {"encoder": np.float16}
"""How an extractor's features are kept (float32 unless named)."""
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


def speech_encoder_model(settings: Settings | None = None) -> ResolvedModel:
    """The bundle's configured speech encoder (never downloads: :class:`training.model_store.BundleError`
    when it is not there)."""
    from shared.settings import load_settings
    from training.encoders.common import resolve_for

    return resolve_for(settings or load_settings(), None, "speech_encoder")


def _load_speech_encoder(model: ResolvedModel) -> SpeechEncoder:
    from training.encoders.speech import SpeechEncoder

    return SpeechEncoder.from_resolved(model, device="cpu", threads=1)


def layer_statistics(hidden: np.ndarray) -> np.ndarray:
    """``[layers, frames, dim]`` -> every layer's mean and SD over the frames, flattened layer-major
    (layer 0's means, layer 0's SDs, layer 1's means, ...): ``[layers * 2 * dim]`` float32; zeros
    when there is no frame."""
    layers, frames, dim = hidden.shape
    if frames == 0:
        return np.zeros(layers * 2 * dim, np.float32)
    h = hidden.astype(np.float64)
    return np.stack([h.mean(axis=1), h.std(axis=1)], axis=1).reshape(-1).astype(np.float32)


def encoder_feature_names(layers: int, dim: int) -> list[str]:
    """Names of :func:`layer_statistics`' columns: ``layer<l>_<mean|sd>_<i>``."""
    return [f"layer{layer}_{stat}_{i}" for layer in range(layers) for stat in ("mean", "sd") for i in range(dim)]


def encoder_layer_columns(names: Sequence[str]) -> list[np.ndarray]:
    """The column indices of each layer in a table named by :func:`encoder_feature_names`, in layer order."""
    of = np.array([int(n.split("_", 1)[0].removeprefix("layer")) for n in names])
    return [np.flatnonzero(of == layer) for layer in range(int(of.max()) + 1)]


def _source_digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update((PROJECT_ROOT / part).read_bytes())
    return h.hexdigest()[:16]


def extractor_version(name: str, speech_encoder: ResolvedModel | None = None) -> str:
    """What the cached features depend on besides the audio: the extractor's code, settings and model."""
    if name == "prosody":
        return f"prosody:{_source_digest('shared/prosody.py')}:{ProsodyOptions()!r}"
    if name == "encoder":
        assert speech_encoder is not None, "the encoder extractor needs the bundle's speech encoder"
        code = _source_digest("training/encoders/speech.py", "training/encoders/whisper_window.py")
        return f"encoder:{speech_encoder.version}:{code}:layer mean+sd"
    import opensmile

    return f"opensmile:{opensmile.__version__}:eGeMAPSv02"


def feature_names(name: str, speech_encoder: ResolvedModel | None = None) -> list[str]:
    if name == "prosody":
        return list(FUNCTIONAL_NAMES)
    if name == "encoder":
        assert speech_encoder is not None, "the encoder extractor needs the bundle's speech encoder"
        encoder = _load_speech_encoder(speech_encoder)
        return encoder_feature_names(encoder.num_layers, encoder.dim)
    return list(_egemaps().feature_names)


def make_extractor(name: str, speech_encoder: ResolvedModel | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``audio -> features`` of extractor ``name``: ``prosody`` or ``egemaps`` (functionals), or
    ``encoder`` (:func:`layer_statistics` of the speech encoder's layers, one thread)."""
    if name == "prosody":
        return extract_functionals
    if name == "encoder":
        assert speech_encoder is not None, "the encoder extractor needs the bundle's speech encoder"
        encoder = _load_speech_encoder(speech_encoder)
        return lambda audio: layer_statistics(encoder.encode_layers(audio, SAMPLE_RATE))
    smile = _egemaps()
    return lambda audio: smile.process_signal(audio, SAMPLE_RATE).to_numpy()[0]


_WORKER: dict[str, Any] = {}


def _init_worker(extractors: Sequence[str], channel: str, speech_encoder: ResolvedModel | None) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _WORKER["channel"] = channel
    _WORKER["extractors"] = {name: make_extractor(name, speech_encoder) for name in extractors}


def _extract(path: str) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    """One clip: each extractor's vector, its CPU seconds, and the clip's duration."""
    audio = through_channel(path, _WORKER["channel"])
    vectors, cpu = {}, {}
    for name, extract in _WORKER["extractors"].items():
        t0 = time.process_time()
        vectors[name] = np.asarray(extract(audio)).astype(STORAGE_DTYPE.get(name, np.float32))
        cpu[name] = time.process_time() - t0
    return vectors, cpu, audio.size / SAMPLE_RATE


@dataclass
class FeatureTable:
    """One extractor's features of every clip, in the examples' order."""

    extractor: str
    names: list[str]
    values: np.ndarray
    """``[clips, features]``, float32 (``encoder``: float16)."""
    cpu_s: float
    """CPU seconds the extractor took over all clips (when computed; cached tables keep the figure)."""
    audio_s: float


def _cache_path(
    cache: Path, extractor: str, channel: str, paths: Sequence[Path], speech_encoder: ResolvedModel | None
) -> Path:
    h = hashlib.sha256(extractor_version(extractor, speech_encoder).encode())
    for p in paths:  # the clips' bytes in order: a copy of the corpus elsewhere keeps its tables
        h.update(f"{p.name}|{content_digest(p)}\n".encode())
    return cache / f"{extractor}-{channel}-{h.hexdigest()[:16]}.npz"


def feature_tables(
    paths: Sequence[Path],
    extractors: Sequence[str],
    channel: str,
    cache: Path,
    workers: int,
    speech_encoder: ResolvedModel | None = None,
) -> dict[str, FeatureTable]:
    """Each extractor's :class:`FeatureTable`, from the cache or computed (``workers`` processes;
    ``speech_encoder``: the bundle model of the ``encoder`` extractor)."""
    from tqdm.auto import tqdm

    tables: dict[str, FeatureTable] = {}
    files = {name: _cache_path(cache, name, channel, paths, speech_encoder) for name in extractors}
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
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(todo, channel, speech_encoder)
    ) as pool:
        results = pool.map(_extract, [str(p) for p in paths], chunksize=8)
        desc = f"{'+'.join(todo)} ({channel})"
        for vectors, seconds, duration in tqdm(results, total=len(paths), desc=desc, unit="clip"):
            for name in todo:
                values[name].append(vectors[name])
                cpu[name] += seconds[name]
            audio_s += duration
    cache.mkdir(parents=True, exist_ok=True)
    for name in todo:
        table = FeatureTable(name, feature_names(name, speech_encoder), np.stack(values[name]), cpu[name], audio_s)
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


class LayerWeightedProbe:
    """A linear probe on a SUPERB-style learned weighted sum of an encoder's layers.

    The columns of ``x`` are ``layers`` equal blocks, layer-major (:func:`layer_statistics`). Each
    column is standardised with the training rows' mean and SD (as :func:`classifier`'s scaler), the
    blocks are mixed as ``sum_l softmax(w)_l z_l`` and a multinomial logistic regression reads the
    mix. ``w`` and the regression are fitted jointly, on the training rows only, by L-BFGS (SciPy's,
    as scikit-learn's ``lbfgs`` solver; gradients by torch autograd; at most ``max_iter``
    iterations, from equal layer weights and a zero classifier) on the mean cross-entropy plus
    ``|W|^2 / (2 C n)``: scikit-learn's ``LogisticRegression(C)`` objective divided by ``C n``, so
    ``C`` is the same weight decay as in :func:`classifier` (the layer logits ``w`` and the
    intercepts are not penalised). After :meth:`fit`, ``layer_weights_`` is ``softmax(w)``.
    """

    def __init__(self, layers: int, c: float = 1.0, max_iter: int = 500) -> None:
        self.layers = int(layers)
        self.c = float(c)
        self.max_iter = int(max_iter)

    def _blocks(self, x: np.ndarray) -> np.ndarray:
        """``[n, layers * dim]`` -> standardised ``[n, layers, dim]``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        return z.reshape(z.shape[0], self.layers, -1)

    def _unpack(self, theta: Any) -> tuple[Any, Any, Any]:
        """The flat parameter vector -> ``(w [layers], coef [classes, dim], intercept [classes])``."""
        k = len(self.classes_)
        w, coef, intercept = theta[: self.layers], theta[self.layers : -k], theta[-k:]
        return w, coef.reshape(k, -1), intercept

    def _logits(self, z: Any, theta: Any) -> Any:
        import torch

        w, coef, intercept = self._unpack(theta)
        return torch.einsum("nld,l->nd", z, torch.softmax(w, 0)) @ coef.T + intercept

    def fit(self, x: np.ndarray, y: np.ndarray) -> LayerWeightedProbe:
        import torch
        from scipy.optimize import minimize

        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] % self.layers:
            raise ValueError(f"need [rows, layers * dim] with {self.layers} layers, got {x.shape}")
        self.classes_, target = np.unique(y, return_inverse=True)
        self.mean_ = x.mean(axis=0)
        sd = x.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        z = torch.from_numpy(self._blocks(x))
        t = torch.from_numpy(target)
        decay = 1.0 / (2.0 * self.c * len(t))

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            params = torch.from_numpy(theta).requires_grad_()
            loss = torch.nn.functional.cross_entropy(self._logits(z, params), t)
            loss = loss + decay * self._unpack(params)[1].pow(2).sum()
            loss.backward()
            assert params.grad is not None
            return loss.item(), params.grad.numpy()

        size = self.layers + len(self.classes_) * (z.shape[2] + 1)
        fitted = minimize(objective, np.zeros(size), jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        self.theta_ = torch.from_numpy(fitted.x)
        self.n_iter_ = int(fitted.nit)
        self.layer_weights_: np.ndarray = torch.softmax(self._unpack(self.theta_)[0], 0).numpy()
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        import torch

        return self._logits(torch.from_numpy(self._blocks(x)), self.theta_).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(x), axis=1)]


def online_features(
    x: np.ndarray,
    speakers: np.ndarray,
    rows: np.ndarray,
    prior: FeaturePrior,
    prior_weight: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    x: np.ndarray,
    y: np.ndarray,
    speakers: np.ndarray,
    folds: Sequence[np.ndarray],
    *,
    c: float,
    prior_weights: Sequence[float],
    orders: int,
    seed: int,
    model: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Per normalisation: the scores of every fold, their mean and SD, and the confusion matrix
    pooled over the folds; online rows also by clips seen and per prior weight (the first is the
    main row). ``model`` makes a fresh classifier (``fit``/``predict``; default :func:`classifier`
    with ``c``); one that learns layer weights (``layer_weights_``, :class:`LayerWeightedProbe`) has
    them reported per fold."""
    from sklearn.metrics import confusion_matrix

    make_model = model or (lambda: classifier(c))

    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    per_speaker = normalise_per_speaker(x, speakers)
    labels = np.arange(int(y.max()) + 1)
    rows: dict[str, dict[str, list[Any]]] = {
        name: {"folds": [], "y": [], "pred": [], "layer_weights": []} for name in ("global", "speaker-offline")
    }
    online = {k0: {"folds": [], "y": [], "pred": [], "seen": []} for k0 in prior_weights}
    every = np.arange(len(y))
    for f, test in enumerate(folds):
        train = np.setdiff1d(every, test)
        models = {}
        for name, features in (("global", x), ("speaker-offline", per_speaker)):
            models[name] = make_model().fit(features[train], y[train])
            if (weights := getattr(models[name], "layer_weights_", None)) is not None:
                rows[name]["layer_weights"].append(np.asarray(weights).tolist())
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
        if r.get("layer_weights"):
            result[name]["layer_weights"] = r["layer_weights"]
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
        out.append(
            {
                "ours": mine,
                "opensmile": smile,
                "pearson": float(np.corrcoef(a, b)[0, 1]),
                "spearman": float(spearmanr(a, b).statistic),
                "pearson_within_speaker": float(np.corrcoef(a_c, b_c)[0, 1]),
            }
        )
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

    pairs = [
        {"ours": mine, "opensmile": smile, "ours_r": r("prosody", mine), "opensmile_r": r("egemaps", smile)}
        for mine, smile in OPENSMILE_PAIRS
    ]
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
        "# Prosodic and speech-encoder features: speaker-independent emotion probe on RAVDESS "
        f"({cfg['channel']} channel)",
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
    if enc := report.get("speech_encoder"):
        n, last = enc["layers"], enc["layers"] - 1
        lines += [
            f"Speech encoder `{enc['model']}` (the bundle's, as the speech branch runs it: the unpadded clip), "
            f"{n} layers of {enc['dim']}: layer 0 is the front-end's output (Whisper: the convolutions plus "
            f"positions), layers 1-{last} the transformer blocks, layer {last} with the final layer norm (what the "
            f"speech branch reads). Every layer's frames pooled to their mean and SD ({2 * enc['dim']} numbers). "
            f"`encoder-last`: layer {last}; `encoder-best-layer`: the layer with the best `speaker-offline` F1 "
            f"below (picked on the test folds, the best of {n}: slightly optimistic); `encoder-weighted`: a "
            f"SUPERB-style weighted sum, softmax(w)-weighted standardised layers, w learned jointly with the "
            f"logistic regression on the training actors only (L-BFGS, at most 500 iterations, C = {cfg['C']} as "
            "weight decay on the classifier, w unpenalised, from equal weights); `prosody+encoder`: the prosodic "
            "functionals beside the best layer in one standardised logistic regression.",
            "",
        ]
    elif report.get("speech_encoder_note"):
        lines += [report["speech_encoder_note"], ""]
    lines += _table(
        ["features", "normalisation", "weighted F1", "accuracy"],
        [
            (f"{name} ({res['n_features']})", norm, _pm(res[norm]["f1"]), _pm(res[norm]["accuracy"]))
            for name, res in results.items()
            for norm in NORMALISATIONS
        ],
        2,
    )
    lines += _encoder_tables(report)
    lines += ["", "`speaker-online` by how many of the speaker's clips came before (pooled over folds and orders):", ""]
    lines += _table(
        ["features", "clips seen", "n", "weighted F1", "accuracy"],
        [
            (name, b["seen"], b["n"], f"{100 * b['f1']:.1f}", f"{100 * b['accuracy']:.1f}")
            for name, res in results.items()
            for b in res["online_by_seen"]
        ],
        3,
    )
    lines += ["", "`speaker-online` against the prior weight k0:", ""]
    lines += _table(
        ["features", "k0", "weighted F1", "accuracy"],
        [
            (name, f"{r['prior_weight']:g}", _pm(r["f1"]), _pm(r["accuracy"]))
            for name, res in results.items()
            for r in res["online_prior_weights"]
        ],
        3,
    )
    lines += [
        "",
        "Extraction cost (in the worker processes, one thread each; decoding and channel simulation excluded):",
        "",
    ]
    lines += _table(
        ["features", "ms CPU per second of audio"],
        [(name, f"{ms:.1f}") for name, ms in report["extraction_ms_per_audio_s"].items()],
        1,
    )
    if report.get("opensmile_agreement"):
        lines += [
            "",
            "openSMILE (research-only licence, not a dependency of this project) was importable from the "
            "interpreter that ran this, e.g. a throwaway virtual environment layered on `.venv`.",
        ]
        lines += [
            "",
            f"Agreement with openSMILE {report['opensmile_version']} eGeMAPSv02 on the same audio "
            f"({report['clips']} clips; within speaker: both centred on each actor's mean):",
            "",
        ]
        lines += _table(
            ["ours", "openSMILE", "Pearson r", "Spearman rho", "r within speaker"],
            [
                (
                    f"`{a['ours']}`",
                    f"`{a['opensmile']}`",
                    f"{a['pearson']:.2f}",
                    f"{a['spearman']:.2f}",
                    f"{a['pearson_within_speaker']:.2f}",
                )
                for a in report["opensmile_agreement"]
            ],
            3,
        )
    elif report.get("opensmile_note"):
        lines += ["", report["opensmile_note"]]
    if report.get("channel_robustness"):
        rob = report["channel_robustness"]
        medians = ", ".join(f"{k} {v:.2f}" for k, v in rob["median"].items())
        lines += [
            "",
            "Channel robustness: Pearson r between each functional on the phone channel and on the studio "
            f"original of the same clips (median over all functionals: {medians}):",
            "",
        ]
        lines += _table(
            ["ours", "r", "openSMILE", "r"],
            [(f"`{a['ours']}`", _r(a["ours_r"]), f"`{a['opensmile']}`", _r(a["opensmile_r"])) for a in rob["pairs"]],
            0,
        )
    best = report["best"]
    lines += [
        "",
        f"Confusion matrix of the best row ({best['features']}, {best['normalisation']}), pooled over the "
        f"folds: `{Path(report['confusion_png']).name}`.",
    ]
    return "\n".join(lines) + "\n"


def _encoder_tables(report: dict[str, Any]) -> list[str]:
    """The layer-by-layer table and the learned layer weights (when the run had them)."""
    lines: list[str] = []
    if layers := report.get("encoder_layers"):
        best = report["best_layer"]
        lines += ["", f"Speech encoder layer by layer (weighted F1; best `speaker-offline`: layer {best}):", ""]
        lines += _table(
            ["layer", *NORMALISATIONS],
            [(r["layer"], *(_pm(r[norm]["f1"]) for norm in NORMALISATIONS)) for r in layers],
            3,
        )
    for name, res in report["results"].items():
        learned = {n: np.array(res[n]["layer_weights"]) for n in NORMALISATIONS if "layer_weights" in res[n]}
        if not learned:
            continue
        lines += [
            "",
            f"Learned layer weights of {name} (softmax(w), mean ± SD over the folds; `speaker-online` "
            "uses the `speaker-offline` classifier):",
            "",
        ]
        n = next(iter(learned.values())).shape[1]
        lines += _table(
            ["layer", *learned],
            [(i, *(f"{w[:, i].mean():.2f} ± {w[:, i].std(ddof=1):.2f}" for w in learned.values())) for i in range(n)],
            len(learned),
        )
    return lines


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---- command line ---------------------------------------------------------------------------------------


def _feature_list(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if unknown := [n for n in names if n not in FEATURE_SETS]:
        choices = ", ".join(FEATURE_SETS)
        raise argparse.ArgumentTypeError(f"unknown feature set {', '.join(unknown)}; choose from {choices}")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.epilog = (
        "Each test actor is unseen in training (leave-actors-out). openSMILE rows appear when the opensmile\n"
        "package is importable (research-only licence: install it in a throwaway environment, never here);\n"
        "speech-encoder rows when the bundle's speech encoder is there (`emotion models fetch`).\n\n"
        "examples:  emotion prosody-probe                                (phone channel, ~10 min on 2 cores)\n"
        "           emotion prosody-probe --features prosody,egemaps     (the functionals only)\n"
        "           emotion prosody-probe --channel studio --out /tmp/probe-studio\n"
        "           emotion prosody-probe --folds 18 --orders 20         (leave one actor out)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--dataset", type=Path, default=DATASET, help=f"RAVDESS folder (default {DATASET})")
    parser.add_argument(
        "--channel",
        choices=["studio", "phone"],
        default="phone",
        help="studio: the clips as recorded; phone: G.711 narrow band (default)",
    )
    parser.add_argument(
        "--features",
        type=_feature_list,
        default=None,
        metavar="SET[,SET...]",
        help=f"feature sets, comma-separated, from {', '.join(FEATURE_SETS)} (default: every one available)",
    )
    parser.add_argument("--folds", type=int, default=6, help="cross-validation folds of whole actors (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and the online orders")
    parser.add_argument(
        "--orders", type=int, default=5, help="random clip orders per test actor for the online rows (default 5)"
    )
    parser.add_argument(
        "--prior-weights",
        type=float,
        nargs="+",
        default=[8.0, 2.0, 32.0],
        metavar="K0",
        help="online prior weights in pseudo-clips, the first is the main row (default 8 2 32)",
    )
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation of the logistic regression")
    parser.add_argument("--no-opensmile", action="store_true", help="skip the openSMILE eGeMAPS comparison")
    parser.add_argument(
        "--no-robustness",
        action="store_true",
        help="phone channel: skip the studio features and phone-vs-studio correlations",
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="extraction processes")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"feature cache (default {CACHE})")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"output stem: <out>.json, <out>.md, <out>-confusion.png (default {OUT})"
    )


@dataclass
class Selection:
    """The feature sets a run evaluates, the speech encoder they need, and why any were left out."""

    sets: list[str]
    speech_encoder: ResolvedModel | None
    opensmile_note: str | None
    speech_encoder_note: str | None

    @property
    def extractors(self) -> list[str]:
        return list(dict.fromkeys(e for name in self.sets for e in EXTRACTORS[name]))


def select_feature_sets(requested: Sequence[str] | None, no_opensmile: bool, settings: Settings | None) -> Selection:
    """``requested`` (None: every set whose extractor is available); a requested set that cannot run
    is an error, except eGeMAPS under ``--no-opensmile``."""
    from training.model_store import BundleError

    sets = list(requested or FEATURE_SETS)
    smile_note = encoder_note = None
    if "egemaps" in sets:
        if no_opensmile:
            smile_note = "openSMILE comparison skipped (--no-opensmile)."
        elif not opensmile_available():
            smile_note = "openSMILE is not installed here: no eGeMAPS rows (see --help)."
            if requested:
                raise SystemExit(f"--features egemaps: {smile_note}")
        if smile_note:
            sets.remove("egemaps")
    model = None
    if any("encoder" in EXTRACTORS[name] for name in sets):
        try:
            model = speech_encoder_model(settings)
        except BundleError as e:
            encoder_note = f"The bundle's speech encoder is not there: no encoder rows ({e})."
            if requested:
                raise SystemExit(f"--features {','.join(requested)}: {encoder_note}") from e
            sets = [name for name in sets if "encoder" not in EXTRACTORS[name]]
    return Selection(sets, model, smile_note, encoder_note)


def evaluate_feature_sets(
    sets: Sequence[str], tables: dict[str, FeatureTable], score: Callable[..., dict[str, Any]], c: float
) -> tuple[dict[str, Any], list[dict[str, Any]], int | None]:
    """Each set of ``sets`` through ``score`` (:func:`evaluate` on the run's labels and folds):
    ``(results by row label, the encoder's layer-by-layer results, the best layer)``; the last two are
    empty and None unless ``encoder-layers`` or ``prosody+encoder`` is among ``sets``."""
    results: dict[str, Any] = {}

    def add(
        label: str,
        x: np.ndarray,
        extractors: Sequence[str],
        scores: dict[str, Any] | None = None,
        model: Callable[[], Any] | None = None,
    ) -> None:
        """Row ``label``: ``scores`` when already computed, else :func:`evaluate` of ``x`` (with ``model``)."""
        if scores is None:
            log.info("evaluating %s", label)
            scores = score(x, model=model)
        ms = sum(1000 * tables[e].cpu_s / tables[e].audio_s for e in extractors)
        results[label] = {"n_features": x.shape[1], "cpu_ms_per_audio_s": ms} | scores

    for name in FUNCTIONALS:
        if name in sets:
            add(EXTRACTOR_LABELS[name], tables[name].values, [name])
    if "encoder" not in tables:
        return results, [], None
    enc = tables["encoder"]
    columns = encoder_layer_columns(enc.names)
    last = len(columns) - 1
    per_layer: dict[int, dict[str, Any]] = {}

    def layer(i: int) -> dict[str, Any]:
        if i not in per_layer:
            log.info("evaluating encoder layer %d", i)
            per_layer[i] = score(enc.values[:, columns[i]])
        return per_layer[i]

    best = None
    if "encoder-layers" in sets or "prosody+encoder" in sets:
        best = max(range(len(columns)), key=lambda i: layer(i)["speaker-offline"]["f1"]["mean"])
    if "encoder-last" in sets:
        add(f"encoder-last, layer {last}", enc.values[:, columns[last]], ["encoder"], layer(last))
    if best is not None and "encoder-layers" in sets:
        add(f"encoder-best-layer, layer {best}", enc.values[:, columns[best]], ["encoder"], layer(best))
    if "encoder-weighted" in sets:
        add(
            f"encoder-weighted, {len(columns)} layers",
            enc.values,
            ["encoder"],
            model=lambda: LayerWeightedProbe(len(columns), c),
        )
    if best is not None and "prosody+encoder" in sets:
        both = np.hstack([tables["prosody"].values.astype(np.float64), enc.values[:, columns[best]]])
        add(f"prosody+encoder, layer {best}", both, ["prosody", "encoder"])
    return results, [{"layer": i} | per_layer[i] for i in sorted(per_layer)], best


def run(args: argparse.Namespace, command: str, settings: Settings | None = None) -> dict[str, Any]:
    from training.compare import machine_description
    from training.evaluate import confusion_matrix_png

    t0 = time.perf_counter()
    examples = load_ravdess(args.dataset)
    classes = [e for e in EMOTIONS if any(x.label == e for x in examples)]
    y = np.array([classes.index(e.label) for e in examples])
    speakers = np.array([e.speaker for e in examples])
    paths = [e.audio_path for e in examples]
    selection = select_feature_sets(args.features, args.no_opensmile, settings)
    if not selection.sets:
        raise SystemExit("no feature set left to evaluate")
    tables = feature_tables(
        paths, selection.extractors, args.channel, args.cache, args.workers, selection.speech_encoder
    )
    folds = actor_folds(speakers, args.folds, args.seed)

    def score(x: np.ndarray, **kwargs: Any) -> dict[str, Any]:
        return evaluate(
            x,
            y,
            speakers,
            folds,
            c=args.C,
            prior_weights=args.prior_weights,
            orders=args.orders,
            seed=args.seed,
            **kwargs,
        )

    results, encoder_layers, best_layer = evaluate_feature_sets(selection.sets, tables, score, args.C)
    best_features, best_norm = max(
        ((f, n) for f in results for n in NORMALISATIONS), key=lambda fn: results[fn[0]][fn[1]]["f1"]["mean"]
    )
    cm = results[best_features][best_norm]["confusion"]
    png = confusion_matrix_png(
        Path(f"{args.out}-confusion.png"), cm, classes, title=f"{best_features}, {best_norm} ({args.channel})"
    )
    report: dict[str, Any] = {
        "command": command,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "config": {
            "dataset": str(args.dataset),
            "channel": args.channel,
            "features": selection.sets,
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
        "extraction_ms_per_audio_s": {EXTRACTOR_LABELS[name]: 1000 * t.cpu_s / t.audio_s for name, t in tables.items()},
        "best": {"features": best_features, "normalisation": best_norm},
        "confusion_png": str(png),
        "prosody_options": repr(ProsodyOptions()),
    }
    if "encoder" in tables:
        columns = encoder_layer_columns(tables["encoder"].names)
        assert selection.speech_encoder is not None
        report["speech_encoder"] = {
            "model": selection.speech_encoder.version,
            "layers": len(columns),
            "dim": len(columns[0]) // 2,
            "pooling": "mean and SD over the frames of each layer",
        }
        if encoder_layers:
            report["encoder_layers"] = encoder_layers
            report["best_layer"] = best_layer
    elif selection.speech_encoder_note:
        report["speech_encoder_note"] = selection.speech_encoder_note
    functionals = {name: tables[name] for name in FUNCTIONALS if name in tables}
    if args.channel == "phone" and not args.no_robustness and functionals:
        studio = feature_tables(paths, list(functionals), "studio", args.cache, args.workers)
        report["channel_robustness"] = channel_robustness(functionals, studio)
    if "egemaps" in tables and "prosody" in tables:
        import opensmile

        report["opensmile_version"] = opensmile.__version__
        report["opensmile_agreement"] = opensmile_agreement(tables["prosody"], tables["egemaps"], speakers)
    elif selection.opensmile_note:
        report["opensmile_note"] = selection.opensmile_note
    report["elapsed_s"] = time.perf_counter() - t0
    return report


def main(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``emotion prosody-probe`` (``settings``: where the bundle's speech encoder is; the corpus is
    the folder given)."""
    if not args.dataset.is_dir():
        raise SystemExit(f"{args.dataset}: no such folder (RAVDESS Actor_NN folders expected)")
    command = f"emotion prosody-probe --channel {args.channel} --folds {args.folds} --seed {args.seed}"
    if args.features:
        command += f" --features {','.join(args.features)}"
    report = run(args, command, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(report_markdown(report))
    print(report_markdown(report))
    return 0
