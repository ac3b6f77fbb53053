"""``FusionConfig``: every hyper-parameter of the proposed model and of the baselines.

One config type serves all registered models (``training.models.build_model(name, config)``), so a
checkpoint only needs ``{"model": name, "config": config.to_dict(), "state_dict": ...}``.  The
config round-trips through plain dicts and YAML (tuples become lists and back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from shared.settings import EMOTIONS

from .layers import POOLINGS

BRANCH_NAMES: dict[str, str] = {"ca": "ca_moe", "sp": "sp_moe", "vs": "voice_stats"}
"""Short branch names used in configs -> the keys of ``FusionOutput.branch_logits`` (``vs``, the
voice-statistics read-out, is not in the paper: :mod:`training.models.voice_stats`)."""

EdgeRule = Literal["center", "overlap"]

ConfigLike = Union["FusionConfig", Mapping[str, Any], None]
"""What model constructors accept: a config, its ``to_dict()`` form, or None for the defaults."""


PAPER_FAVOURED_CLASSES: dict[str, tuple[str, ...]] = {"ca": ("fear", "sadness"), "sp": ("anger", "happiness")}
"""The paper's complementarity: the cross-attention branch is stronger on the "complex" emotions,
the sum-product branch on the "clear" ones."""


@dataclass
class FusionConfig:
    """Dimensions and hyper-parameters (defaults: the offline encoders, tuned for 2-core CPU serving)."""

    # ---- inputs (the encoders' last hidden states) -----------------------------------------------
    d_text: int = 384
    """Text encoder width (multilingual-e5-small: 384; the paper's KoELECTRA: 768)."""
    d_speech: int = 512
    """Speech encoder width (Whisper-base encoder: 512; the paper's HuBERT: 768)."""
    max_tokens: int = 128
    max_frames: int = 128
    edge_rule: EdgeRule = "center"
    """Time-aligned graph: a frame joins a word when its centre (``center``) lies in the word's
    time span, or when the two intervals overlap at all (``overlap``)."""
    speaker_norm: bool = False
    """Z-score the speech frames against the speaker's baseline in the call blended with a prior
    fitted on the training speakers (:class:`training.models.layers.SpeakerNormalisation`), before
    the GAT and the branches see them. Off: the paper's raw frames."""
    speaker_prior_weight: float = 8.0
    """``k0``: how many utterances' worth of evidence the prior counts for against the speaker's own."""
    speech_pooling: str = "mean"
    """How the SP-MoE (and the pooled baselines) turn speech frames into an utterance vector:
    ``"mean"`` (the paper) or ``"mean+std"`` (statistics pooling: the frames' mean and SD, so the
    vector also says how much the voice moves; docs/training.md measures it)."""

    # ---- time-aligned graph (GAT) ------------------------------------------------------------------
    d_graph: int = 128
    """Graph embedding width (the ``features.graph`` payload)."""
    gat_hidden: int = 128
    gat_heads: int = 4
    gat_layers: int = 2

    # ---- mixture-of-experts branches ---------------------------------------------------------------
    branches: tuple[str, ...] = ("ca", "sp")
    """Which branches :class:`ComplementaryFusion` builds: ``("ca", "sp")`` (the paper), ``("ca",)`` or
    ``("sp",)`` (the single-branch rows), and ``"vs"`` beside them (the voice-statistics read-out)."""
    d_model: int = 128
    n_experts: int = 5
    ca_top_k: int = 1
    """CA-MoE routing: top-1 (Switch) by default, which keeps the fusion near 2 ms per utterance on
    2 CPU threads; top-2 costs one more cross-attention block per utterance (~+60% fusion time)."""
    sp_top_k: int = 2
    """SP-MoE routing: top-2 (GShard); its linear experts are cheap."""
    n_heads: int = 4
    """Attention heads of each cross-attention expert."""
    ffn_mult: int = 2
    """Cross-attention expert FFN width = ``ffn_mult * d_model``."""
    gate_noise: float = 0.0
    """Std of the Gaussian noise added to gate logits while training (noisy top-k gating); 0 = off."""
    dropout: float = 0.1

    # ---- late fusion -------------------------------------------------------------------------------
    favoured_classes: dict[str, tuple[str, ...]] | None = None
    """Per branch, the classes it initially weighs more on in the class-wise late fusion.  None:
    :data:`PAPER_FAVOURED_CLASSES` restricted to ``class_names`` (so a 4-class IEMOCAP label set
    works unchanged); explicit names must all be in ``class_names``."""
    favour: float = 0.75
    """Initial late-fusion weight of a branch on its favoured classes (the other branch gets the rest)."""

    # ---- labels and losses -------------------------------------------------------------------------
    n_classes: int = 7
    class_names: tuple[str, ...] = EMOTIONS
    aux_loss_weight: float = 0.01
    """Weight of the experts' load-balancing loss in :func:`training.models.fusion.fusion_loss`."""
    branch_loss_weight: float = 0.5
    """Weight of the per-branch cross-entropy (deep supervision of each branch) in ``fusion_loss``."""

    # ---- baselines ---------------------------------------------------------------------------------
    baseline_hidden: int = 128
    """BiLSTM hidden size per direction, CNN channels, MLP hidden width of the baselines."""
    cnn_kernel: int = 5

    def __post_init__(self) -> None:
        self.branches = tuple(self.branches)
        self.class_names = tuple(self.class_names)
        if self.favoured_classes is None:
            self.favoured_classes = {
                b: tuple(c for c in names if c in self.class_names) for b, names in PAPER_FAVOURED_CLASSES.items()
            }
        self.favoured_classes = {str(k): tuple(v) for k, v in dict(self.favoured_classes).items()}
        problems = []
        if (
            not self.branches
            or not set(self.branches) <= set(BRANCH_NAMES)
            or len(set(self.branches)) != len(self.branches)
        ):
            problems.append(f"branches must be a non-empty subset of {tuple(BRANCH_NAMES)}, got {self.branches}")
        if len(self.class_names) != self.n_classes:
            problems.append(f"{len(self.class_names)} class_names for n_classes={self.n_classes}")
        for k in (self.ca_top_k, self.sp_top_k):
            if not 1 <= k <= self.n_experts:
                problems.append(f"top-k {k} outside 1..n_experts={self.n_experts}")
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.gat_hidden % self.gat_heads:
            problems.append(f"gat_hidden={self.gat_hidden} is not divisible by gat_heads={self.gat_heads}")
        unknown = {c for v in self.favoured_classes.values() for c in v} - set(self.class_names)
        if unknown:
            problems.append(f"favoured_classes name unknown classes {sorted(unknown)}")
        if set(self.favoured_classes) - set(BRANCH_NAMES):
            problems.append(f"favoured_classes keys must be among {tuple(BRANCH_NAMES)}")
        if not 0.0 < self.favour < 1.0:
            problems.append(f"favour={self.favour} must lie in (0, 1)")
        if self.speech_pooling not in POOLINGS:
            problems.append(f"speech_pooling={self.speech_pooling!r} must be one of {POOLINGS}")
        if self.edge_rule not in ("center", "overlap"):
            problems.append(f"edge_rule={self.edge_rule!r} must be 'center' or 'overlap'")
        if problems:
            raise ValueError("invalid FusionConfig: " + "; ".join(problems))

    # ---- round trips -------------------------------------------------------------------------------

    def replace(self, **changes: Any) -> FusionConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict (tuples as lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):  # favoured_classes
                v = {k: list(x) for k, x in v.items()}
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FusionConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they are usually typos)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FusionConfig keys: {sorted(unknown)}")
        return cls(**dict(data))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> FusionConfig:
        """From YAML text, or from a file when ``source`` is a :class:`~pathlib.Path`."""
        text = source.read_text() if isinstance(source, Path) else source
        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def coerce(cls, config: ConfigLike) -> FusionConfig:
        if config is None:
            return cls()
        if isinstance(config, FusionConfig):
            return config
        return cls.from_dict(config)
