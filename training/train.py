"""Training of the paper's emotion models on extracted features.

A training run is described by a :class:`TrainConfig`, read from a YAML *recipe*
(``training/recipes/proposed.yaml`` by default) with ``key=value`` dotted overrides from the
command line, SpeechBrain / Hydra style::

    emotion train train.lr=3e-4 model.top_k=1 data.text_source=manifest

Recipe sections:

``model``
    ``name`` (a :data:`training.models.MODELS` entry), ``top_k`` (sets both branches' gating k:
    the table's top-1 / top-2 rows; ``null`` keeps ``ca_top_k`` / ``sp_top_k``) and any
    :class:`~training.models.FusionConfig` field (``dropout``, ``n_experts``, ``aux_loss_weight``,
    ...).  The input sizes and the label set come from the features and the data section.
``train``
    The paper's hyper-parameters by default: Adam, learning rate 1e-4, batch 32, up to 100 epochs,
    early stopping with patience 5 on the validation weighted F1.  Learning-rate schedule: the
    CA-MoE branch's parameters follow a OneCycleLR schedule (peak ``lr``, over all ``epochs``), the
    rest of the model keeps the constant ``lr``: two Adam optimizers stepped together (one per
    parameter set), because OneCycleLR drives every parameter group of its optimizer.  Models with
    a CA-MoE branch are not stopped before its warm-up is over (``min_epochs: null``).
``data``
    Manifest, text source (ASR transcript or corpus text), ASR model, feature cache, splits.

:func:`train` returns the best epoch's model and a :class:`TrainHistory`; :func:`save_trained`
writes the model folder (:mod:`training.checkpoint`) with ``history.json`` and
``training_curves.png``.  ``emotion train`` is :func:`main` (arguments: :func:`add_arguments`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from shared.settings import EMOTIONS
from training.data.manifest import ManifestError
from training.evaluate import Metrics, confusion_matrix_png, evaluate
from training.models import (
    MODELS,
    ComplementaryFusion,
    EmotionModel,
    FusionBatch,
    FusionConfig,
    build_model,
    collate,
    fusion_loss,
)
from training.speakers import attach_baselines, speaker_prior

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings
    from training.data import Example
    from training.features import FeatureRecord

__all__ = [
    "DEFAULT_CORPUS",
    "DEFAULT_RECIPE",
    "RECIPES_DIR",
    "SHIPPED_MODEL",
    "ConfigError",
    "DataSection",
    "EpochLog",
    "ModelSection",
    "TrainConfig",
    "TrainHistory",
    "TrainSection",
    "add_arguments",
    "default_corpus",
    "ensure_default_model",
    "train_and_save",
    "load_examples",
    "main",
    "prepare_features",
    "save_trained",
    "seed_everything",
    "train",
    "training_curves_png",
]

log = logging.getLogger("training.train")

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "proposed.yaml"
DEFAULT_CORPUS: dict[str, Any] = {"name": "synthetic-v1", "n_per_class": 120, "languages": ("en", "ko"), "seed": 0}
"""The synthetic corpus ``emotion train`` / ``emotion compare`` generate when given no manifest
(``<home>/corpora/synthetic-v1``: 7 classes x 120 utterances, English and Korean)."""
SHIPPED_MODEL = Path(__file__).resolve().parent / "shipped" / "default"
"""The trained model that ships with the package and that ``emotion demo`` serves when
``<home>/trained/default`` holds none (trained by ``training/recipes/default.yaml``)."""

FEATURE_FIELDS = frozenset({"d_text", "d_speech", "max_tokens", "max_frames", "n_classes", "class_names"})
"""FusionConfig fields set from the features and the data section, never from a recipe."""


class ConfigError(ValueError):
    """A recipe or an override names an unknown key or holds a value of the wrong type."""


# ---- the configuration ----------------------------------------------------------------------------------


@dataclass
class ModelSection:
    """Which model of the registry, and its :class:`FusionConfig` overrides."""

    name: str = "proposed"
    top_k: int | None = None
    """Gating k of both MoE branches (``ca_top_k`` and ``sp_top_k``); None keeps them."""
    fusion: dict[str, Any] = field(default_factory=dict)
    """FusionConfig fields (written flat in the recipe: ``model.dropout``, ``model.n_experts``, ...)."""

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ConfigError(f"model.name={self.name!r} is not a registered model; known: {sorted(MODELS)}")


@dataclass
class TrainSection:
    """Optimisation (defaults: the paper's hyper-parameters)."""

    lr: float = 1e-4
    """Adam learning rate (constant), and the OneCycleLR peak of the CA-MoE branch."""
    ca_schedule: Literal["onecycle", "constant"] = "onecycle"
    """Schedule of the CA-MoE branch's parameters."""
    onecycle_pct_start: float = 0.3
    """Fraction of the cycle spent warming up (OneCycleLR ``pct_start``)."""
    onecycle_div_factor: float = 25.0
    """OneCycleLR starts at ``lr / div_factor``."""
    weight_decay: float = 0.0
    voice_stats_lr: float = 1e-3
    """Adam learning rate of the voice-statistics read-out (``model.branches`` with ``vs``; not in
    the paper). It is one linear layer on standardised statistics: at the paper's 1e-4 it is still
    far from converged when early stopping picks an epoch (on RAVDESS split 0 its weighted F1 is
    0.53 after 5 epochs at 1e-4, 0.65 at 1e-3; docs/training.md)."""
    batch_size: int = 32
    epochs: int = 100
    """Maximum epochs (also the OneCycleLR cycle length)."""
    patience: int = 5
    """Stop after this many epochs without improvement of ``monitor``."""
    min_epochs: int | None = None
    """Never stop before this many epochs.  None: until the CA-MoE branch's OneCycleLR warm-up is
    over (``ceil(onecycle_pct_start * epochs)``, 30 by default) for models with that branch, else 1:
    stopping during the warm-up would judge a branch that has not reached its learning rate yet."""
    monitor: Literal["val_f1", "val_loss"] = "val_f1"
    """Early stopping / best epoch criterion: validation weighted F1 (ties: lower loss) or loss."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value (None: no clipping)."""
    text_dropout: float = 0.0
    """Modality dropout: the probability that a training utterance loses its text (mask, hidden
    states and graph edges; :meth:`FusionBatch.without`), so the speech side learns alone."""
    speech_dropout: float = 0.0
    """The same for the speech. An utterance never loses both: one that would keeps its speech;
    utterances that have only one modality (text-only corpora) keep it."""
    eval_batch_size: int = 64
    seed: int = 0
    threads: int | None = None
    """torch intra-op threads (None: leave torch's setting)."""
    progress: bool = True
    """tqdm bar per epoch."""


@dataclass
class DataSection:
    """Corpus and features."""

    manifest: str | None = None
    """JSON-lines manifest; None: the default synthetic corpus (:data:`DEFAULT_CORPUS`)."""
    text_source: Literal["asr", "manifest"] = "asr"
    """Text embedded for the text branch: Whisper's transcript (what serving sees) or the corpus text."""
    asr_model: str | None = None
    """Bundle ASR model for the features (None: ``settings.models.asr``), e.g. ``whisper-tiny.en``."""
    speech_layer: int | None = None
    """Speech encoder hidden state the speech branch reads (None: ``settings.models.speech_layer``);
    recorded in the model, whose export and evaluation then use the same layer."""
    speech_prosody: bool | None = None
    """Prosodic descriptors beside each speech frame (None: ``settings.models.speech_prosody``);
    recorded in the model like the layer."""
    cache_dir: str | None = None
    """Feature cache (None: ``<home>/features``)."""
    workers: int = 2
    """Feature extraction processes."""
    channel: Literal["none", "g711", "phone", "phone-voices"] = "none"
    """Listening condition of the spoken utterances (:data:`training.data.telephony.CONDITIONS`):
    ``phone`` puts each through a random simulated phone line (noise, gain, clipping, mu-law, 8 kHz
    band), drawn from its id; ``phone-voices`` moves half the voices up to 3 semitones first;
    utterances that already went through a line (the synthetic corpus) are left as they are."""
    corpora: list[dict] = field(default_factory=list)
    """Without a manifest, the corpora to train on, mixed: each ``{name, path, take, ...}`` with
    ``name`` an ``emotion data list`` corpus or ``synthetic`` (the default synthetic corpus),
    ``path`` its folder (relative: under ``datasets``), ``take`` an optional cap (whole dialogues,
    each split alike, as ``emotion data mix --take``) and the loader's options (``calm``).
    A text corpus may add ``spoken: N``: a seeded sample of N of its kept lines is also spoken
    flat by espeak-ng (``emotion data speak``; ids ``<id>-flat``, each in its text line's split),
    so the model learns those words both as text and through Whisper beside a voice that carries
    no emotion. Empty: the default synthetic corpus alone."""
    datasets: str = "../shared/datasets"
    """Folder the relative corpus paths lie in (relative: to the current directory);
    ``data.datasets=/my/copies`` points a recipe at a user's own copies."""
    voice_copies: list[float] = field(default_factory=list)
    """Semitones: each training speaker is also heard with its voice moved by each of these, as a
    new speaker (:func:`training.data.telephony.voice_copies`); only the train split is copied.
    Empty: none."""
    split_by: Literal["speaker", "call", "none"] = "speaker"
    """How examples without a ``split`` are assigned to train/val/test (speaker-independent by default)."""
    split_seed: int = 0
    class_names: tuple[str, ...] = EMOTIONS
    """Label set, in the order of the model's outputs."""


@dataclass
class TrainConfig:
    """A training recipe: ``model``, ``train`` and ``data`` sections (see the module docstring)."""

    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    data: DataSection = field(default_factory=DataSection)
    recipe: str | None = None
    """The YAML file it was read from (informational)."""

    # ---- construction ----------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, recipe: str | None = None) -> TrainConfig:
        """From nested sections (``{"model": {...}, "train": {...}, "data": {...}}``); unknown keys
        and ill-typed values raise :class:`ConfigError`."""
        data = dict(data or {})
        config = cls(recipe=recipe)
        unknown = set(data) - set(SECTIONS)
        if unknown:
            raise ConfigError(_unknown_message("section", sorted(unknown)[0], SECTIONS))
        for section, values in data.items():
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"section {section!r} must be a mapping, got {type(values).__name__}")
            for key, value in values.items():
                config.set(f"{section}.{key}", value)
        return config.validated()

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        """A recipe file with ``key=value`` overrides applied."""
        path = Path(path)
        if not path.is_file() and path.parent == Path(".") and (RECIPES_DIR / f"{path.name}.yaml").is_file():
            path = RECIPES_DIR / f"{path.name}.yaml"  # a recipe of the package by name: --recipe default
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
            raise ConfigError(f"recipe not found: {path} (the package's recipes: {known})")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: a recipe is a mapping of sections")
        return cls.from_dict(data, recipe=str(path)).with_overrides(overrides)

    def with_overrides(self, overrides: Sequence[str] | Mapping[str, Any]) -> TrainConfig:
        """A copy with dotted overrides applied: ``["train.lr=3e-4", "model.top_k=1"]`` (values parsed
        as YAML, then converted to the field's type) or a mapping ``{"train.lr": 3e-4}``."""
        config = copy.deepcopy(self)
        items = overrides.items() if isinstance(overrides, Mapping) else (_split_override(o) for o in overrides)
        for key, value in items:
            config.set(key, value)
        return config.validated()

    def set(self, key: str, value: Any) -> None:
        """Set one dotted key (``section.field``; ``model.<FusionConfig field>`` too)."""
        section_name, _, name = key.partition(".")
        if section_name not in SECTIONS or not name:
            raise ConfigError(_unknown_message("key", key, [f"{s}.<field>" for s in SECTIONS]))
        section = getattr(self, section_name)
        own = {f.name for f in fields(section)} - ({"fusion"} if section_name == "model" else set())
        if name in own:
            hint = get_type_hints(type(section))[name]
            setattr(section, name, _coerce(value, hint, key))
            return
        if section_name == "model":
            if name in FEATURE_FIELDS:
                raise ConfigError(f"{key} is set from the features / data.class_names, not from a recipe")
            defaults = {f.name: getattr(_FUSION_DEFAULTS, f.name) for f in fields(FusionConfig)}
            if name in defaults:
                hint = get_type_hints(FusionConfig)[name]
                section.fusion[name] = _coerce(value, hint, key)
                return
            known = sorted(own | (set(defaults) - FEATURE_FIELDS))
        else:
            known = sorted(own)
        raise ConfigError(_unknown_message("key", name, known, prefix=f"{section_name}."))

    def validated(self) -> TrainConfig:
        """Re-run the section checks and build the FusionConfig once (errors name the recipe keys)."""
        ModelSection.__post_init__(self.model)
        t = self.train
        problems = []
        if t.lr <= 0:
            problems.append(f"train.lr={t.lr} must be > 0")
        for name in ("batch_size", "epochs", "eval_batch_size"):
            if getattr(t, name) < 1:
                problems.append(f"train.{name} must be >= 1")
        if t.patience < 1 or (t.min_epochs is not None and t.min_epochs < 0):
            problems.append("train.patience must be >= 1 and train.min_epochs >= 0")
        if not 0.0 < t.onecycle_pct_start < 1.0:
            problems.append("train.onecycle_pct_start must lie in (0, 1)")
        if self.model.top_k is not None and self.model.top_k < 1:
            problems.append("model.top_k must be >= 1")
        if problems:
            raise ConfigError("; ".join(problems))
        try:
            self.fusion_config(d_text=8, d_speech=8, max_tokens=4, max_frames=4)
        except ValueError as exc:
            raise ConfigError(f"model section: {exc}") from exc
        return self

    # ---- views -----------------------------------------------------------------------------------------

    def fusion_config(self, *, d_text: int, d_speech: int, max_tokens: int, max_frames: int) -> FusionConfig:
        """The model's :class:`FusionConfig`: recipe overrides + feature sizes + label set."""
        overrides = dict(self.model.fusion)
        if self.model.top_k is not None:
            overrides.update(ca_top_k=self.model.top_k, sp_top_k=self.model.top_k)
        classes = tuple(self.data.class_names)
        return FusionConfig(
            **{
                **overrides,
                "d_text": d_text,
                "d_speech": d_speech,
                "max_tokens": max_tokens,
                "max_frames": max_frames,
                "n_classes": len(classes),
                "class_names": classes,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (``model`` flat, as written in recipes)."""
        model = {"name": self.model.name, "top_k": self.model.top_k, **self.model.fusion}
        data = dataclasses.asdict(self.data)
        data["class_names"] = list(self.data.class_names)
        return {"model": model, "train": dataclasses.asdict(self.train), "data": data}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


SECTIONS: tuple[str, ...] = ("model", "train", "data")
_FUSION_DEFAULTS = FusionConfig()


def _split_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _unknown_message(what: str, name: str, known: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown {what} '{prefix}{name}'{hint}; known: {', '.join(prefix + k for k in known)}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to the type ``hint`` (YAML gives ``"1e-4"`` as a string, ints for floats...)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} must be one of {list(args)}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        inner = args[0] if args else Any
        items = [v if inner is Any else _coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        return {str(k): tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{key}={value!r} must be an integer")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r} must be an integer") from None
        if not number.is_integer():
            raise ConfigError(f"{key}={value!r} must be an integer")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} must be a number") from None
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}={value!r} must be a string")
        return str(value)
    return value


# ---- determinism ----------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (training shuffles use their own generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- history --------------------------------------------------------------------------------------------


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    """Mean training objective (:func:`training.models.fusion_loss`) over the epoch's batches."""
    val_loss: float
    """Mean cross-entropy of the fused prediction on the validation set."""
    val_accuracy: float
    val_f1: float
    lr: dict[str, float]
    """Learning rate at the end of the epoch per parameter set (``ca_moe``, ``rest``)."""
    seconds: float


@dataclass
class TrainHistory:
    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    seed: int = 0
    steps_per_epoch: int = 0
    best_val: dict[str, Any] = field(default_factory=dict)
    """The best epoch's validation metrics (:meth:`training.evaluate.Metrics.to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainHistory:
        data = dict(data)
        data["epochs"] = [EpochLog(**e) for e in data.get("epochs", [])]
        return cls(**data)


# ---- optimisation ---------------------------------------------------------------------------------------


CA_PREFIX = "branches.ca_moe."
VOICE_STATS_PREFIX = "branches.voice_stats."


@dataclass
class _Optimisation:
    """The two parameter sets' optimizers and the CA-MoE schedule, stepped together."""

    optimizers: dict[str, torch.optim.Optimizer]
    scheduler: torch.optim.lr_scheduler.LRScheduler | None

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def lrs(self) -> dict[str, float]:
        return {name: float(opt.param_groups[0]["lr"]) for name, opt in self.optimizers.items()}


def _optimisation(model: EmotionModel, t: TrainSection, total_steps: int) -> _Optimisation:
    """Adam on every parameter at the constant ``lr``, except the CA-MoE branch's parameters, which
    get their own Adam driven by OneCycleLR (peak ``lr``) when ``ca_schedule == "onecycle"``, and
    the voice-statistics read-out's, at ``voice_stats_lr``."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ca = [p for n, p in trainable if n.startswith(CA_PREFIX)]
    voice = [p for n, p in trainable if n.startswith(VOICE_STATS_PREFIX)]
    rest = [p for n, p in trainable if not n.startswith((CA_PREFIX, VOICE_STATS_PREFIX))]
    optimizers: dict[str, torch.optim.Optimizer] = {}
    scheduler = None
    if rest:
        optimizers["rest"] = torch.optim.Adam(rest, lr=t.lr, weight_decay=t.weight_decay)
    if voice:
        optimizers["voice_stats"] = torch.optim.Adam(voice, lr=t.voice_stats_lr, weight_decay=t.weight_decay)
    if ca:
        optimizers["ca_moe"] = torch.optim.Adam(ca, lr=t.lr, weight_decay=t.weight_decay)
        if t.ca_schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizers["ca_moe"],
                max_lr=t.lr,
                total_steps=max(total_steps, 2),
                pct_start=t.onecycle_pct_start,
                div_factor=t.onecycle_div_factor,
            )
    return _Optimisation(optimizers, scheduler)


def _feature_dims(features: Sequence[Any]) -> dict[str, int]:
    first = features[0]
    return {
        "d_text": int(first.text_hidden.shape[-1]),
        "d_speech": int(first.speech_frames.shape[-1]),
        "max_tokens": int(first.text_hidden.shape[0]),
        "max_frames": int(first.speech_frames.shape[0]),
    }


def _improved(metrics: Metrics, best: Metrics | None, monitor: str) -> bool:
    if best is None:
        return True
    if monitor == "val_loss":
        return metrics.loss < best.loss  # type: ignore[operator]
    if metrics.f1 != best.f1:
        return metrics.f1 > best.f1
    return metrics.loss < best.loss  # type: ignore[operator]


def drop_modalities(batch: FusionBatch, p_text: float, p_speech: float, rng: np.random.Generator) -> FusionBatch:
    """Modality dropout (``train.text_dropout`` / ``speech_dropout``): per utterance, drop its text
    with ``p_text`` and its speech with ``p_speech``, never both, and never the only modality it has."""
    has_text, has_speech = batch.text_mask.any(1).numpy(), batch.speech_mask.any(1).numpy()
    drop_text = (rng.random(batch.batch_size) < p_text) & has_speech
    drop_speech = (rng.random(batch.batch_size) < p_speech) & has_text & ~drop_text
    return batch.without(torch.from_numpy(drop_text), torch.from_numpy(drop_speech))


def train(
    config: TrainConfig,
    features_train: Sequence[FeatureRecord | Any],
    features_val: Sequence[FeatureRecord | Any],
    seed: int | None = None,
    speaker_window: int | None = None,
) -> tuple[EmotionModel, TrainHistory]:
    """Train ``config.model`` on ``features_train`` with early stopping on ``features_val``.

    Returns the model of the best validation epoch (in eval mode) and the :class:`TrainHistory`.
    ``seed`` (default ``config.train.seed``) seeds the initialisation, dropout and the shuffles:
    the same seed, config and features give the same model.  Each epoch is logged (and shown as a
    tqdm bar when ``config.train.progress``).

    With ``model.speaker_norm`` the model's speaker prior is fitted on ``features_train`` first,
    and with ``speaker_window`` (``settings.models.speaker_window``) the training records' simulated
    sessions (:mod:`training.speakers`) are drawn again every epoch; the validation records keep
    the baselines they come with.
    """
    if not features_train or not features_val:
        raise ValueError(f"need training and validation utterances, got {len(features_train)} and {len(features_val)}")
    t = config.train
    seed = t.seed if seed is None else int(seed)
    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(seed)
    fusion = config.fusion_config(**_feature_dims(features_train))
    model = build_model(config.model.name, fusion)
    if model.speaker_norm is not None:
        mean, var = speaker_prior(features_train)
        model.speaker_norm.fit_prior(torch.from_numpy(mean), torch.from_numpy(var))
    if isinstance(model, ComplementaryFusion):
        batches = (
            collate(features_train[lo : lo + 256], edge_rule=fusion.edge_rule, class_names=fusion.class_names)
            for lo in range(0, len(features_train), 256)
        )
        if n := model.fit_voice_scaler(batches):
            log.info("voice statistics: standardised on %d training utterances with speech", n)
    steps = (len(features_train) + t.batch_size - 1) // t.batch_size
    opt = _optimisation(model, t, steps * t.epochs)
    min_epochs = t.min_epochs
    if min_epochs is None:
        min_epochs = math.ceil(t.onecycle_pct_start * t.epochs) if opt.scheduler is not None else 1
    shuffle = np.random.default_rng(seed)
    history = TrainHistory(seed=seed, steps_per_epoch=steps)
    best: Metrics | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    started = time.perf_counter()
    log.info(
        "train %s (seed %d): %d train / %d val utterances, %d steps per epoch, %d to %d epochs",
        config.model.name,
        seed,
        len(features_train),
        len(features_val),
        steps,
        min_epochs,
        t.epochs,
    )
    for epoch in range(1, t.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        if model.speaker_norm is not None and speaker_window is not None:
            attach_baselines(features_train, speaker_window, shuffle)
        order = shuffle.permutation(len(features_train))
        total, count = 0.0, 0
        bar = tqdm(
            range(steps),
            desc=f"{config.model.name} s{seed} epoch {epoch}",
            unit="batch",
            leave=False,
            disable=not t.progress,
            dynamic_ncols=True,
        )
        for step in bar:
            idx = order[step * t.batch_size : (step + 1) * t.batch_size]
            batch = collate(
                [features_train[i] for i in idx], edge_rule=fusion.edge_rule, class_names=fusion.class_names
            )
            if t.text_dropout or t.speech_dropout:
                batch = drop_modalities(batch, t.text_dropout, t.speech_dropout, shuffle)
            out = model(batch)
            loss = fusion_loss(out, batch.labels, fusion.aux_loss_weight, fusion.branch_loss_weight)
            opt.zero_grad()
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        val = evaluate(model, features_val, t.eval_batch_size)
        entry = EpochLog(
            epoch,
            total / count,
            float(val.loss or 0.0),
            val.accuracy,
            val.f1,
            opt.lrs(),
            time.perf_counter() - epoch_start,
        )
        history.epochs.append(entry)
        improved = _improved(val, best, t.monitor)
        if improved:
            best, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
            history.best_epoch = epoch
        else:
            stale += 1
        log.info(
            "%s s%d epoch %d: train loss %.4f, val loss %.4f, val acc %.4f, val F1 %.4f, %.1f s%s",
            config.model.name,
            seed,
            epoch,
            entry.train_loss,
            entry.val_loss,
            entry.val_accuracy,
            entry.val_f1,
            entry.seconds,
            " *" if improved else "",
        )
        if stale >= t.patience and epoch >= min_epochs:
            history.stopped_early = epoch < t.epochs
            break
    assert best is not None and best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - started
    history.best_val = best.to_dict()
    log.info(
        "train %s (seed %d): best epoch %d of %d (val F1 %.4f, acc %.4f) in %.0f s",
        config.model.name,
        seed,
        history.best_epoch,
        len(history.epochs),
        best.f1,
        best.accuracy,
        history.seconds,
    )
    return model, history


# ---- outputs --------------------------------------------------------------------------------------------


def training_curves_png(path: str | Path, history: TrainHistory, title: str | None = None) -> Path:
    """Loss (train and validation) and validation accuracy / weighted F1 per epoch; the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in history.epochs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    try:
        left.plot(epochs, [e.train_loss for e in history.epochs], label="train objective")
        left.plot(epochs, [e.val_loss for e in history.epochs], label="val cross-entropy")
        left.set_xlabel("epoch")
        left.set_ylabel("loss")
        right.plot(epochs, [e.val_f1 for e in history.epochs], label="val weighted F1")
        right.plot(epochs, [e.val_accuracy for e in history.epochs], label="val accuracy", linestyle="--")
        right.set_xlabel("epoch")
        right.set_ylim(0, 1)
        for ax in (left, right):
            if history.best_epoch:
                ax.axvline(history.best_epoch, color="grey", linestyle=":", label=f"best epoch {history.best_epoch}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _portable(path: str | Path | None) -> str | None:
    """``path`` as a model folder records it: relative to the working directory when it lies under
    it (``training/recipes/default.yaml``), so a model folder committed with the code names no
    machine's paths; otherwise as given."""
    if path is None:
        return None
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) if p.is_absolute() else str(p)
    except ValueError:
        return str(p)


def save_trained(
    directory: str | Path,
    model: EmotionModel,
    history: TrainHistory,
    config: TrainConfig,
    *,
    encoders: Mapping[str, str] | None = None,
    test_metrics: Metrics | None = None,
    corpus: str | None = None,
) -> Path:
    """Write the model folder: ``model.pt`` + ``model.yaml`` (:func:`training.checkpoint.save_model`),
    ``history.json``, ``training_curves.png`` and, with ``test_metrics``, ``metrics.json`` and
    ``confusion_matrix.png``."""
    from training.checkpoint import ModelMeta, save_model

    directory = Path(directory)
    summary = {
        "recipe": _portable(config.recipe),
        "corpus": _portable(corpus),
        "text_source": config.data.text_source,
        "asr_model": config.data.asr_model,
        "best_epoch": history.best_epoch,
        "epochs_run": len(history.epochs),
        "stopped_early": history.stopped_early,
        "seconds": round(history.seconds, 1),
        "val": {k: history.best_val.get(k) for k in ("accuracy", "precision", "recall", "f1", "loss")},
        "config": config.to_dict(),
    }
    if test_metrics is not None:
        summary["test"] = test_metrics.summary()
    meta = ModelMeta(
        registry_name=model.registry_name or config.model.name,
        config=model.config.to_dict(),
        class_names=list(model.config.class_names),
        encoders=dict(encoders or {}),
        seed=history.seed,
        training=summary,
    )
    save_model(directory, model, meta)
    (directory / "history.json").write_text(json.dumps(history.to_dict(), indent=2) + "\n")
    training_curves_png(directory / "training_curves.png", history, f"{meta.registry_name} (seed {history.seed})")
    if test_metrics is not None:
        (directory / "metrics.json").write_text(json.dumps(test_metrics.to_dict(), indent=2) + "\n")
        confusion_matrix_png(
            directory / "confusion_matrix.png",
            test_metrics.confusion,
            test_metrics.class_names,
            title=f"{meta.registry_name}: test split",
        )
    return directory


# ---- data -----------------------------------------------------------------------------------------------


def default_corpus(settings: Settings, progress: bool = True, spec: Mapping[str, Any] = DEFAULT_CORPUS) -> Path:
    """The manifest of a synthetic corpus, generated once into ``<home>/corpora/<name>``
    (:data:`DEFAULT_CORPUS` unless ``spec`` says otherwise; espeak-ng, English + Korean)."""
    from training.data.synthetic import generate_corpus

    out = settings.home / "corpora" / spec["name"]
    manifest = out / "manifest.jsonl"
    if manifest.is_file() and (out / "corpus.json").is_file():
        return manifest
    log.info("generating the synthetic corpus %s into %s (once)", spec["name"], out)
    return generate_corpus(
        out,
        spec["n_per_class"],
        spec["languages"],
        seed=spec["seed"],
        workers=min(2, os.cpu_count() or 1),
        progress=progress,
        overwrite=True,
    )


def corpora_manifest(settings: Settings, data: DataSection, progress: bool = True) -> Path:
    """The manifest of the recipe's ``data.corpora``, mixed once into ``<home>/corpora/mix-<digest>``
    (the digest covers the entries, the folders they resolve to and the split, so a changed recipe
    or another copy of the data gives a new mix). Every line carries its split (corpora without
    one: ``data.split_by`` / ``split_seed``), so ``emotion eval`` on the mix sees training's test split."""
    from training.data.corpora import CORPORA, corpus_of
    from training.data.manifest import read_manifest, split_examples, write_manifest
    from training.data.prepare import mix_manifests
    from training.data.spoken import speak_flat

    entries = []
    for i, entry in enumerate(data.corpora):
        entry = dict(entry)
        name = entry.pop("name", None)
        take = entry.pop("take", None)
        spoken = None
        if name == "synthetic":
            options, path = entry, None
            unknown = set(options) - {"n_per_class", "languages", "seed"}
            if unknown:
                raise ConfigError(f"data.corpora[{i}] (synthetic): unknown option {sorted(unknown)[0]!r}")
        elif name in CORPORA:
            if "path" not in entry:
                raise ConfigError(f"data.corpora[{i}] ({name}) needs a path")
            path = str((Path(data.datasets).expanduser() / entry.pop("path")).resolve())
            spoken = entry.pop("spoken", None)
            if spoken is not None and CORPORA[name].kind != "text":
                raise ConfigError(f"data.corpora[{i}] ({name}): spoken is for text corpora, {name} has audio")
            options = entry
            unknown = set(options) - set(CORPORA[name].options)
            if unknown:
                raise ConfigError(f"data.corpora[{i}] ({name}): unknown option {sorted(unknown)[0]!r}")
        else:
            raise ConfigError(_unknown_message("corpus", str(name), ["synthetic", *CORPORA]))
        for key, value in (("take", take), ("spoken", spoken)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.corpora[{i}] ({name}): {key} must be a positive integer, got {value!r}")
        entry = {"name": name, "path": path, "take": take, "options": options}
        if spoken is not None:  # in the digest only when set: the mixes of older recipes keep their digest
            entry["spoken"] = spoken
        entries.append(entry)
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.corpora names a corpus twice: {names}")
    split = {"by": data.split_by, "seed": data.split_seed}  # written into the mix: eval sees the same test split
    digest = hashlib.sha256(json.dumps([entries, split], sort_keys=True).encode()).hexdigest()[:12]
    out = settings.home / "corpora" / f"mix-{digest}"
    manifest = out / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    parts = []
    for entry in entries:
        part = out / f"{entry['name']}.jsonl"
        if entry["name"] == "synthetic":
            spec = {**DEFAULT_CORPUS, **entry["options"]}
            if spec != DEFAULT_CORPUS:
                spec["languages"] = tuple(spec["languages"])
                spec["name"] = f"synthetic-{spec['n_per_class']}x{'+'.join(spec['languages'])}-seed{spec['seed']}"
            examples = read_manifest(default_corpus(settings, progress, spec))
        else:
            if not Path(entry["path"]).is_dir():
                raise ConfigError(
                    f"{entry['name']}: no corpus folder at {entry['path']} (set data.datasets, or the entry's path)"
                )
            examples = CORPORA[entry["name"]].load(entry["path"], **entry["options"])
        parts.append(write_manifest(part, examples))
        log.info("%s: %d utterances", entry["name"], len(examples))
    take = {e["name"]: e["take"] for e in entries if e["take"] is not None}
    mixed = mix_manifests(parts, take)
    for entry in entries:
        if entry.get("spoken"):
            kept = [ex for ex in mixed if corpus_of(ex.id) == entry["name"]]
            flat = speak_flat(
                kept,
                out / "spoken" / entry["name"],
                take=entry["spoken"],
                seed=data.split_seed,
                workers=data.workers,
                progress=progress,
            )
            log.info("%s: %d of its lines also spoken flat", entry["name"], len(flat))
            mixed += flat
    if data.split_by != "none":
        mixed = split_examples(mixed, data.split_seed, by=data.split_by)
    log.info("mixed %d corpora: %d utterances -> %s", len(parts), len(mixed), manifest)
    return write_manifest(manifest, mixed)


def train_and_save(
    settings: Settings, config: TrainConfig, manifest: str | Path, out: Path, seed: int | None = None
) -> Path:
    """Features (cached), training, test-split evaluation and the model folder ``out``."""
    from training.checkpoint import model_version

    splits, encoders = prepare_features(settings, manifest, config.data, config.train.progress)
    if not splits["val"]:
        raise ConfigError(f"{manifest} has no validation split (early stopping needs one)")
    model, history = train(
        config, splits["train"], splits["val"], seed=seed, speaker_window=settings.models.speaker_window
    )
    test = evaluate(model, splits["test"]) if splits["test"] else None
    save_trained(out, model, history, config, encoders=encoders, test_metrics=test, corpus=str(manifest))
    result = f"val F1 {history.best_val['f1']:.4f}"
    if test is not None:
        result += f", test accuracy {test.accuracy:.4f}, test weighted F1 {test.f1:.4f}"
    print(f"trained {model_version(out)} -> {out} (best epoch {history.best_epoch}, {result})")
    return out


def ensure_default_model(settings: Settings) -> Path:
    """The model the main job serves (``<home>/trained/default``): when that folder holds none, the
    shipped model (``training/shipped/default``, trained with ``emotion train --recipe default``;
    its ``MODEL_CARD.md`` says on what and how well) is copied there. A model trained or promoted
    into it since is left alone."""
    from training.checkpoint import MODEL_FILE, model_version

    out = settings.default_model_dir
    if (out / MODEL_FILE).is_file():
        return out
    if not (SHIPPED_MODEL / MODEL_FILE).is_file():
        raise ConfigError(
            f"no trained model in {out}, and the shipped one is missing from {SHIPPED_MODEL}: "
            "train one with `emotion train --recipe default`"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".default-", dir=out.parent))
    shutil.copytree(SHIPPED_MODEL, staging, dirs_exist_ok=True)
    if out.exists():  # a folder without a model (an interrupted copy or training): replaced
        shutil.rmtree(out)
    staging.rename(out)
    log.info("serving the shipped default model %s (copied from %s)", model_version(out), SHIPPED_MODEL)
    return out


def load_examples(manifest: str | Path, data: DataSection) -> list[Example]:
    """The manifest's examples, with train/val/test assigned where the manifest has none."""
    from training.data import read_manifest, split_examples

    examples = read_manifest(manifest, labels=data.class_names)
    if any(ex.split is None for ex in examples):
        by = None if data.split_by == "none" else data.split_by
        examples = split_examples(examples, data.split_seed, by=by)
    return examples


def prepare_features(
    settings: Settings, manifest: str | Path, data: DataSection, progress: bool = True
) -> tuple[dict[str, list[FeatureRecord]], dict[str, str]]:
    """Features of the manifest split into ``train`` / ``val`` / ``test`` (cached), and the
    encoder versions they were computed with."""
    from training.encoders.speech import SpeechReading
    from training.features import extract_features, feature_spec

    m = settings.models
    settings = SpeechReading(
        m.speech_layer if data.speech_layer is None else data.speech_layer,
        m.speech_level_dbfs,
        m.speech_prosody if data.speech_prosody is None else data.speech_prosody,
    ).applied(settings)
    examples = load_examples(manifest, data)
    if data.voice_copies:
        from training.data.telephony import voice_copies

        copies = voice_copies([ex for ex in examples if ex.split == "train"], data.voice_copies)
        log.info("voice copies: %d training utterances heard again at %s semitones", len(copies), data.voice_copies)
        examples = [*examples, *copies]
    records = extract_features(
        settings,
        examples,
        data.cache_dir,
        data.text_source,
        data.workers,
        progress,
        asr_model=data.asr_model,
        class_names=data.class_names,
        channel=data.channel,
    )
    splits: dict[str, list[FeatureRecord]] = {"train": [], "val": [], "test": []}
    for r in records:
        splits.setdefault(r.split or "train", []).append(r)
    log.info("splits: %s", {k: len(v) for k, v in splits.items()})
    return splits, feature_spec(settings, data.asr_model).encoders


# ---- command line: emotion train ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``emotion train``."""
    parser.description = (
        "Train an emotion model of the paper from a YAML recipe. Features (Whisper transcript with word "
        "timestamps, text and speech encoder states) are extracted once and cached under <home>/features. "
        "Without --manifest the default synthetic corpus (English + Korean, 7 x 120 utterances) is generated "
        "once into <home>/corpora/synthetic-v1. The model folder gets model.pt, model.yaml, history.json, "
        "training_curves.png and, when the corpus has a test split, metrics.json and confusion_matrix.png."
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="JSON-lines manifest (default: data.manifest of the recipe, else the synthetic corpus)",
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        default=DEFAULT_RECIPE,
        help=(
            "YAML recipe file, or a recipe of the package by name: proposed (the paper's model and "
            "hyper-parameters; the default), default (the shipped model: real speech and text corpora from "
            "data.datasets, ../shared/datasets unless overridden, plus the synthetic corpus)"
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="model folder to write (default: <home>/trained/default, the model serving uses)",
    )
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: train.seed of the recipe)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="recipe overrides, e.g. train.lr=3e-4 model.top_k=1 data.text_source=manifest",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``emotion train``: train one model from a recipe and write its folder; 0 on success."""
    try:
        config = TrainConfig.from_yaml(args.recipe, args.overrides)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if args.no_progress:
        config.train.progress = False
    try:
        manifest = args.manifest or config.data.manifest
        if manifest is None:
            progress = config.train.progress
            manifest = (
                corpora_manifest(settings, config.data, progress)
                if config.data.corpora
                else default_corpus(settings, progress)
            )
        train_and_save(settings, config, manifest, Path(args.out or settings.default_model_dir), seed=args.seed)
    except (ConfigError, ManifestError) as exc:
        log.error("%s", exc)
        return 2
    return 0
