"""Parameter counts, latency measurement and synthetic utterances for the emotion models.

``emotion profile`` prints parameter counts and per-utterance latencies of the
proposed model and its branches (batch 1 and 32, 1 and 2 threads) beside the paper's figures.
"""

from __future__ import annotations

import argparse
import statistics
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from shared.settings import Settings

from .base import EmotionModel
from .batch import FusionBatch, UtteranceFeatures, collate
from .config import FusionConfig

Stage = Literal["full", "fusion", "graph"]

PAPER_FUSION_MS = {"ca_moe": 2.08, "sp_moe": 0.69}
"""The paper's reported fusion latency per utterance (its hardware, not ours)."""

FRAME_S = 0.02
"""Source frame stride of the speech encoders (50 frames/s)."""


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level child module (``ComplementaryFusion``: per branch and the GAT)."""
    out: dict[str, int] = {}
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleDict):
            out.update({f"{name}.{k}": parameter_count(v) for k, v in child.items()})
        else:
            out[name] = parameter_count(child)
    return out


# ---- synthetic utterances -----------------------------------------------------------------------------


def synthetic_utterances(
    n: int,
    *,
    d_text: int,
    d_speech: int,
    max_tokens: int = 128,
    max_frames: int = 128,
    n_classes: int = 7,
    duration: tuple[float, float] = (1.5, 8.0),
    seed: int = 0,
) -> list[UtteranceFeatures]:
    """Random utterances shaped like the encoders' output: a transcript of ``~2.5`` Whisper-style
    words (``" word"``, some with punctuation) per second, 1-2 sub-word tokens per word between
    two special tokens, 20 ms frames (adaptive-average-pooled times beyond ``max_frames``), random
    hidden states (zero on padding) and a random label."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    out = []
    for _ in range(n):
        dur = float(rng.uniform(*duration))
        n_words = max(1, int(dur * 2.5))
        texts = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(n_words)]
        words, pos, offsets = [], 0, [(0, 0)]  # leading special token
        slot = (dur - 0.2) / n_words
        for w, text in enumerate(texts):
            start = 0.1 + w * slot
            words.append((" " + text + ("," if rng.random() < 0.15 else ""), start, start + 0.8 * slot))
            cut = int(rng.integers(1, len(text))) if len(text) > 3 and rng.random() < 0.5 else len(text)
            offsets += [(pos, pos + cut)] + ([(pos + cut, pos + len(text))] if cut < len(text) else [])
            pos += len(text) + 1
        transcript = " ".join(texts)
        offsets = (offsets[: max_tokens - 1] + [(0, 0)])[:max_tokens]  # trailing special token
        n_tok = len(offsets)
        token_offsets = np.zeros((max_tokens, 2), np.int32)
        token_offsets[:n_tok] = offsets
        text_mask = np.arange(max_tokens) < n_tok
        n_src = max(1, int(dur / FRAME_S))
        if n_src <= max_frames:
            starts = np.arange(n_src) * FRAME_S
            ends = starts + FRAME_S
        else:
            j = np.arange(max_frames)
            starts = np.floor(j * n_src / max_frames) * FRAME_S
            ends = np.ceil((j + 1) * n_src / max_frames) * FRAME_S
        n_fr = len(starts)
        frame_times = np.zeros((max_frames, 2), np.float32)
        frame_times[:n_fr] = np.stack([starts, np.minimum(ends, dur)], 1)
        speech_mask = np.arange(max_frames) < n_fr
        out.append(
            UtteranceFeatures(
                text_hidden=(rng.standard_normal((max_tokens, d_text)) * text_mask[:, None]).astype(np.float32),
                text_mask=text_mask,
                token_offsets=token_offsets,
                speech_frames=(rng.standard_normal((max_frames, d_speech)) * speech_mask[:, None]).astype(np.float32),
                speech_mask=speech_mask,
                frame_times=frame_times,
                transcript=transcript,
                words=words,
                label=int(rng.integers(n_classes)),
            )
        )
    return out


def synthetic_batch(
    config: FusionConfig | Mapping[str, Any],
    batch_size: int,
    seed: int = 0,
    duration: tuple[float, float] = (1.5, 8.0),
) -> FusionBatch:
    """:func:`collate` of :func:`synthetic_utterances` with the config's dimensions."""
    c = FusionConfig.coerce(config)
    examples = synthetic_utterances(
        batch_size,
        d_text=c.d_text,
        d_speech=c.d_speech,
        max_tokens=c.max_tokens,
        max_frames=c.max_frames,
        n_classes=c.n_classes,
        duration=duration,
        seed=seed,
    )
    return collate(examples, edge_rule=c.edge_rule, class_names=c.class_names)


# ---- latency ------------------------------------------------------------------------------------------


def measure_latency(
    model: EmotionModel,
    batch_size: int,
    dims: FusionConfig | Mapping[str, Any] | None = None,
    repeats: int = 20,
    *,
    threads: int | None = None,
    warmup: int = 3,
    stage: Stage = "full",
    seed: int = 0,
) -> float:
    """Median wall time of one forward pass divided by ``batch_size``: milliseconds per utterance.

    ``dims``: the input dimensions (a config or a mapping with ``d_text``, ``d_speech`` and
    optionally ``max_tokens``, ``max_frames``); defaults to ``model.config``.  ``stage``:
    ``"full"`` the whole model (GAT included), ``"fusion"`` everything after the graph embedding
    (it is precomputed, as on the serving path; this is what the paper's fusion latency measures),
    ``"graph"`` only the GAT.  Runs under ``torch.inference_mode`` in eval mode with
    ``torch.set_num_threads(threads)`` when given (both restored afterwards).
    """
    config = model.config if dims is None else FusionConfig.coerce({**model.config.to_dict(), **_dims(dims)})
    batch = synthetic_batch(config, batch_size, seed)
    gat = getattr(model, "gat", None)
    if stage == "graph" and gat is None:
        raise ValueError(f"{type(model).__name__} has no GAT")
    was_training, old_threads = model.training, torch.get_num_threads()
    model.eval()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            if stage == "fusion" and gat is not None:
                batch.graph = model.time_aligned_graph(batch)
            if stage == "graph":
                run = lambda: gat(batch.text, batch.text_mask, batch.speech, batch.speech_mask, batch.edge_index)  # noqa: E731
            else:
                run = lambda: model(batch)  # noqa: E731
            for _ in range(warmup):
                run()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return statistics.median(times) * 1e3 / batch_size


def _dims(dims: FusionConfig | Mapping[str, Any]) -> dict[str, Any]:
    d = dims.to_dict() if isinstance(dims, FusionConfig) else dict(dims)
    return {k: d[k] for k in ("d_text", "d_speech", "max_tokens", "max_frames") if k in d}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Parameter counts and per-utterance latencies of the fusion models (the proposed model and its CA-MoE "
        "and SP-MoE branches by default) at each batch size and thread count, beside the paper's fusion figures; "
        "random weights of the configured dimensions (the cost does not depend on the weights)."
    )
    parser.add_argument("--models", nargs="+", default=["proposed", "ca_moe", "sp_moe"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--stages", nargs="+", default=["fusion", "full"], choices=["fusion", "full", "graph"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds; the fastest round is reported (robust to other load on the CPU)",
    )
    parser.add_argument("--config", help="a FusionConfig YAML file (defaults otherwise)")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from . import build_model

    config = FusionConfig.from_yaml(Path(args.config)) if args.config else FusionConfig()
    torch.manual_seed(0)
    models = {name: build_model(name, config) for name in args.models}
    cells = [(n, st, t, bs) for n in args.models for st in args.stages for t in args.threads for bs in args.batch]
    best: dict[tuple[str, str, int, int], float] = {}
    for _ in range(args.rounds):
        for n, st, t, bs in cells:
            ms = measure_latency(models[n], bs, repeats=args.repeats, threads=t, stage=st)  # type: ignore[arg-type]
            best[(n, st, t, bs)] = min(ms, best.get((n, st, t, bs), float("inf")))
    print(
        f"torch {torch.__version__}; d_text={config.d_text} d_speech={config.d_speech} d_model={config.d_model} "
        f"n_experts={config.n_experts} ca_top_k={config.ca_top_k} sp_top_k={config.sp_top_k}"
    )
    print("\n| model | parameters | breakdown |\n| --- | ---: | --- |")
    for n, model in models.items():
        breakdown = ", ".join(f"{k}={v:,}" for k, v in parameter_breakdown(model).items())
        print(f"| {n} | {parameter_count(model):,} | {breakdown} |")
    print("\n| model | stage | threads | batch | ms/utterance | paper fusion ms/utterance |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for n, st, t, bs in cells:
        print(f"| {n} | {st} | {t} | {bs} | {best[(n, st, t, bs)]:.3f} | {PAPER_FUSION_MS.get(n, '')} |")
    return 0
