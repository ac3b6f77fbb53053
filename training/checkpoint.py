"""A trained emotion model on disk: the one format training writes and export/serving read.

A model folder holds::

    model.yaml    # registry name, FusionConfig, class names, encoder versions, seed, metrics summary
    model.pt      # the state_dict
    (metrics.json, confusion_matrix.png, training_curves.png written by training/evaluation)

:func:`model_version` is ``<registry name>@<sha256 of model.pt, 12 hex>``: it goes into cache keys,
emotion events and the Triton model's parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from training.models import EmotionModel, FusionConfig, build_model

MODEL_FILE = "model.pt"
META_FILE = "model.yaml"


class CheckpointError(RuntimeError):
    """A model folder is missing, incomplete or inconsistent."""


@dataclass
class ModelMeta:
    registry_name: str
    config: dict[str, Any]
    class_names: list[str]
    encoders: dict[str, str] = field(default_factory=dict)
    """Role -> bundle version the features were computed with (``text_encoder``, ``speech_encoder``, ``asr``)."""
    seed: int | None = None
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    training: dict[str, Any] = field(default_factory=dict)
    """Corpus, hyper-parameters, epochs, best validation metrics, ..."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry_name": self.registry_name,
            "config": self.config,
            "class_names": self.class_names,
            "encoders": self.encoders,
            "seed": self.seed,
            "created_at": self.created_at,
            "training": self.training,
        }


def model_version(directory: Path) -> str:
    meta = read_meta(directory)
    h = hashlib.sha256((directory / MODEL_FILE).read_bytes()).hexdigest()[:12]
    return f"{meta.registry_name}@{h}"


def read_meta(directory: Path) -> ModelMeta:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {META_FILE}; train a model with `emotion train` first")
    data = yaml.safe_load(path.read_text())
    try:
        return ModelMeta(**data)
    except TypeError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def save_model(directory: Path, model: EmotionModel, meta: ModelMeta) -> Path:
    """Write ``model.pt`` and ``model.yaml`` atomically (a reader never sees half a model)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".pt.tmp", delete=False) as tmp:
        torch.save(model.state_dict(), tmp)
    os.replace(tmp.name, directory / MODEL_FILE)
    text = yaml.safe_dump(meta.to_dict(), sort_keys=False, allow_unicode=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".yaml.tmp", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, directory / META_FILE)
    return directory


def load_model(
    directory: Path, device: str | torch.device = "cpu", *, with_gat: bool = True
) -> tuple[EmotionModel, ModelMeta]:
    """The trained model in eval mode, and its metadata.  ``with_gat=False``: without the GAT's
    message-passing layers (their weights are left out and torch-geometric is never imported), for
    the fusion server, which is given each utterance's graph embedding; such a model refuses a batch
    without one."""
    directory = Path(directory)
    meta = read_meta(directory)
    weights = directory / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {MODEL_FILE} is missing")
    config = FusionConfig.from_dict(meta.config)
    if not with_gat:
        config = dataclasses.replace(config, gat_layers=0)
    model = build_model(meta.registry_name, config)
    state = torch.load(weights, map_location=device, weights_only=True)
    if not with_gat:
        state = {k: v for k, v in state.items() if not k.startswith(("gat.convs.", "gat.norms."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: state does not match {meta.registry_name} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval(), meta
