"""The trained model's two served parts as networks for ONNX Runtime (``graph_gat``, ``moe_fusion``).

``emotion export`` writes each into its version folder (``<version>/network/``, beside the
``trained/`` weights it comes from), and the models' CPU instances run it without importing torch
(about 0.5 GB less per stub process; :mod:`training.encoders.onnx`).  The networks are the model's
own code on the trained weights:

* ``graph_gat``: speaker normalisation, then :meth:`training.models.graph.TimeAlignedGAT.dense`,
  the GAT on each utterance's ``[T, F]`` adjacency (:func:`shared.alignment.time_aligned_adjacency`,
  which the server computes in numpy from the word spans) instead of an edge list.
* ``moe_fusion``: the model's ``forward`` on a batch that carries its graph embedding.

Both always take the speaker baseline; a request without one is given ``count = 0`` (the prior
alone, exactly what the model does without a baseline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GRAPH_GAT_INPUTS = (
    "text",
    "text_mask",
    "speech",
    "speech_mask",
    "adjacency",
    "speaker_count",
    "speaker_mean",
    "speaker_var",
)
GRAPH_GAT_OUTPUTS = ("graph",)
MOE_FUSION_INPUTS = (
    "text",
    "text_mask",
    "speech",
    "speech_mask",
    "graph",
    "speaker_count",
    "speaker_mean",
    "speaker_var",
)
MOE_FUSION_OUTPUTS = ("probs", "logits", "ca_probs", "sp_probs")
NETWORK_DIR = "network"
"""The network's folder inside a version folder."""


def no_baseline(batch: int, d_speech: int) -> dict[str, np.ndarray]:
    """The speaker inputs of utterances without a baseline: each a speaker's first (the prior alone)."""
    return {
        "speaker_count": np.zeros(batch, np.float32),
        "speaker_mean": np.zeros((batch, d_speech), np.float32),
        "speaker_var": np.ones((batch, d_speech), np.float32),
    }


def has_network(version_dir: Path | None) -> bool:
    """Whether a version folder holds a network for ONNX Runtime (a model whose code does not
    export, such as the BiLSTM baseline's packed sequences, has none and is served on torch)."""
    return version_dir is not None and (version_dir / NETWORK_DIR / "network.onnx").is_file()


def load_network(version_dir: Path | None, name: str, threads: int):
    """The network of a version folder on ONNX Runtime (:class:`training.encoders.onnx.OnnxNetwork`)."""
    from training.encoders.onnx import OnnxNetwork

    if version_dir is None or not (version_dir / NETWORK_DIR).is_dir():
        raise RuntimeError(f"{name}: no {NETWORK_DIR}/ in the version folder {version_dir}; run `emotion export`")
    return OnnxNetwork(version_dir / NETWORK_DIR, threads)


def export_trained_network(name: str, model_dir: Path, folder: Path) -> Path:
    """Write the network of ``name`` (``graph_gat`` or ``moe_fusion``) of the trained model in
    ``model_dir`` to ``folder``.  Returns ``folder``."""
    import torch

    from training.checkpoint import load_model, model_version
    from training.encoders.onnx import export_network
    from training.models import FusionBatch

    model, meta = load_model(model_dir, with_gat=name == "graph_gat")
    config = model.config
    b, t, f = 2, 12, 20
    generator = torch.Generator().manual_seed(0)
    example = {
        "text": torch.randn(b, t, config.d_text, generator=generator),
        "text_mask": torch.ones(b, t, dtype=torch.bool),
        "speech": torch.randn(b, f, config.d_speech, generator=generator),
        "speech_mask": torch.ones(b, f, dtype=torch.bool),
        **{k: torch.from_numpy(v) for k, v in no_baseline(b, config.d_speech).items()},
    }
    dims = {0: "batch"}

    if name == "graph_gat":
        example["adjacency"] = torch.rand(b, t, f, generator=generator) > 0.7

        class Network(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(
                self, text, text_mask, speech, speech_mask, adjacency, speaker_count, speaker_mean, speaker_var
            ):
                batch = FusionBatch(text, text_mask, speech, speech_mask, torch.zeros((2, 0), dtype=torch.long))
                batch.speaker_count, batch.speaker_mean, batch.speaker_var = speaker_count, speaker_mean, speaker_var
                batch = self.model.normalise_speakers(batch)
                return self.model.gat.dense(batch.text, batch.text_mask, batch.speech, batch.speech_mask, adjacency)

        inputs, outputs = GRAPH_GAT_INPUTS, GRAPH_GAT_OUTPUTS
    elif name == "moe_fusion":
        example["graph"] = torch.randn(b, config.d_graph, generator=generator)
        branches = tuple(getattr(model, "branches", {}) or {})

        class Network(torch.nn.Module):  # type: ignore[no-redef]
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, text, text_mask, speech, speech_mask, graph, speaker_count, speaker_mean, speaker_var):
                batch = FusionBatch(text, text_mask, speech, speech_mask, torch.zeros((2, 0), dtype=torch.long))
                batch.graph = graph
                batch.speaker_count, batch.speaker_mean, batch.speaker_var = speaker_count, speaker_mean, speaker_var
                out = self.model(batch)
                branch = [
                    torch.softmax(out.branch_logits[k], -1) if k in branches else torch.zeros_like(out.probs)
                    for k in ("ca_moe", "sp_moe")
                ]
                return out.probs, out.logits, *branch

        inputs, outputs = MOE_FUSION_INPUTS, MOE_FUSION_OUTPUTS
    else:
        raise ValueError(f"{name}: no network of the trained model by that name")
    dynamic = {k: dict(dims) for k in inputs}
    for k in ("text", "text_mask"):
        dynamic[k][1] = "tokens"
    for k in ("speech", "speech_mask"):
        dynamic[k][1] = "frames"
    if name == "graph_gat":
        dynamic["adjacency"] = {0: "batch", 1: "tokens", 2: "frames"}
    front_end = {
        "model_version": model_version(model_dir),
        "d_speech": config.d_speech,
        "edge_rule": config.edge_rule,
        "registry_name": meta.registry_name,
    }
    example = {k: example[k] for k in inputs}
    return export_network(Network().eval(), example, dynamic, folder, front_end, outputs=outputs)
