"""The fusion heads beside the paper: CA-MoE, SP-MoE and the proposed model (both, late-fused).

Parameters and milliseconds per utterance at batch 1 and 32, measured after the graph embedding
(as served: the ``moe_fusion`` model gets the GAT's output), on random utterances shaped like the
encoders' output (:func:`training.models.profile.measure_latency`).  The dimensions are the
served model's (text and speech encoder widths), so the figures are those of what runs.  The
paper reports 2.08 ms (CA-MoE) and 0.69 ms (SP-MoE) per utterance on its hardware.
"""

from __future__ import annotations

import logging

from training.models import FusionConfig, build_model
from training.models.profile import PAPER_FUSION_MS, measure_latency, parameter_count

log = logging.getLogger(__name__)

HEADS = ("ca_moe", "sp_moe", "proposed")


def fusion_table(
    config: FusionConfig, batches: tuple[int, ...], threads: tuple[int, ...], rounds: int, repeats: int = 20
) -> list[dict]:
    """One row per head, thread count and batch: parameters, fastest-of-``rounds`` ms/utterance."""
    import torch

    torch.manual_seed(0)
    models = {name: build_model(name, config).eval() for name in HEADS}
    cells = [(name, t, b) for name in HEADS for t in threads for b in batches]
    best: dict[tuple[str, int, int], float] = {}
    for _ in range(rounds):  # interleaved, so that a burst of other load hits every cell alike
        for name, t, b in cells:
            ms = measure_latency(models[name], b, repeats=repeats, threads=t, stage="fusion")
            best[(name, t, b)] = min(ms, best.get((name, t, b), float("inf")))
    rows = []
    for name, t, b in cells:
        model = models[name]
        fusion_params = parameter_count(model) - (parameter_count(model.gat) if getattr(model, "gat", None) else 0)
        rows.append(
            {
                "model": name,
                "threads": t,
                "batch": b,
                "ms_per_utterance": round(best[(name, t, b)], 3),
                "parameters": parameter_count(model),
                "parameters_after_gat": fusion_params,
                "paper_ms_per_utterance": PAPER_FUSION_MS.get(name),
            }
        )
    log.info(
        "fusion heads: %s",
        ", ".join(f"{r['model']} b{r['batch']} t{r['threads']} {r['ms_per_utterance']:.2f} ms" for r in rows),
    )
    return rows
