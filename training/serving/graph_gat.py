"""Triton model ``graph_gat``: the trained model's time-aligned GAT (one graph embedding per utterance).

Inputs (per row = one utterance): ``TEXT`` FP16 ``[B, T, Dt]``, ``TEXT_MASK`` BOOL ``[B, T]``,
``OFFSETS`` INT32 ``[B, T, 2]`` (the ``text_encoder`` outputs), ``SPEECH`` FP16 ``[B, F, Ds]``,
``SPEECH_MASK`` BOOL ``[B, F]``, ``FRAME_TIMES`` FP32 ``[B, F, 2]`` (the ``speech_encoder``
outputs), ``WORD_SPANS`` FP64 ``[B, W, 4]``: the ASR words located in the transcript as
``(char_start, char_end, t_start, t_end)`` (:func:`training.models.timed_word_spans`), rows
zero-padded to the request's longest (a zero row is no word; ``allow_ragged_batch``), and
``WORD_COUNT`` INT32 ``[B, 1]`` (optional: real words per row).
Outputs: ``GRAPH`` FP32 ``[B, d_graph]`` and ``EDGES`` INT32 ``[B, 1]`` (time-aligned edges).

``WORD_SPANS`` is FP64, not FP32: word times are Python floats everywhere else (Whisper words, the
``utterances`` contract, training's ``collate``), and a frame whose centre falls exactly on a word
boundary (pooled frames of utterances over ``max_frames`` * 20 ms do) would flip its edge if the
boundary were rounded to float32, so the served graph would not be bit-for-bit the trained one.

A CPU instance runs the version folder's ``network/`` on ONNX Runtime and never imports torch: each
row's time-aligned graph is built in numpy (:func:`shared.alignment.time_aligned_adjacency`, the
model's ``edge_rule``) and the GAT runs on it (:mod:`training.serving.networks`). A GPU instance
runs the rows through :func:`training.models.collate` (the same edges, as a list) and
``model.time_aligned_graph``. Both are the computation ``ComplementaryFusion`` does in-process,
with the trained weights of the version folder's ``trained/`` copy.
"""

from __future__ import annotations

import numpy as np

from shared.alignment import time_aligned_adjacency
from shared.triton_models import GraphGatTensors as T
from training.serving.networks import has_network, load_network, no_baseline
from training.serving.triton_base import TritonModelBase, ragged_rows, speaker_baseline


class TritonPythonModel(TritonModelBase):
    tensors = T

    def uses_torch(self) -> bool:
        return self.device != "cpu" or not has_network(self.version_dir)

    def load(self, settings, params):
        if not self.uses_torch():
            self.network = load_network(self.version_dir, self.name, self.threads)
            self.version = self.network.front_end["model_version"]
            return
        from training.checkpoint import load_model, model_version

        directory = self.trained_dir()
        model, _ = load_model(directory, device=self.device)
        if getattr(model, "gat", None) is None:
            raise RuntimeError(f"{directory}: model {model.registry_name} has no time-aligned GAT")
        self.model, self.config = model.eval(), model.config
        self.version = model_version(directory)

    def served_version(self):
        return self.version

    def infer(self, items):
        if not self.uses_torch():
            return self.infer_network(items)
        import torch

        from training.models import UtteranceFeatures, collate

        examples, sizes = [], []
        for item in items:
            spans = ragged_rows(np.asarray(item[T.WORD_SPANS.name], np.float64), item.get(T.WORD_COUNT.name))
            sizes.append(len(spans))
            for b, word_spans in enumerate(spans):
                examples.append(
                    UtteranceFeatures(
                        text_hidden=item[T.TEXT.name][b],
                        text_mask=item[T.TEXT_MASK.name][b],
                        token_offsets=item[T.OFFSETS.name][b],
                        speech_frames=item[T.SPEECH.name][b],
                        speech_mask=item[T.SPEECH_MASK.name][b],
                        frame_times=item[T.FRAME_TIMES.name][b],
                        word_spans=[tuple(s) for s in word_spans],
                        **speaker_baseline(item, b),
                    )
                )
        batch = collate(examples, edge_rule=self.config.edge_rule, class_names=self.config.class_names).to(self.device)
        with torch.inference_mode():
            graph = self.model.time_aligned_graph(batch).float().cpu().numpy()
        edges = batch.edge_counts.cpu().numpy().astype(np.int32).reshape(-1, 1)
        out, start = [], 0
        for n in sizes:
            out.append({T.GRAPH.name: graph[start : start + n], T.EDGES.name: edges[start : start + n]})
            start += n
        return out

    def infer_network(self, items):
        """The GAT on ONNX Runtime: each row's ``[T, F]`` adjacency in numpy, then one run on the
        batch cut to its last valid token and frame (padding beyond takes no part)."""
        rule, front = self.network.front_end["edge_rule"], self.network.front_end
        rows = []
        for item in items:
            spans = ragged_rows(np.asarray(item[T.WORD_SPANS.name], np.float64), item.get(T.WORD_COUNT.name))
            baseline = speaker_baseline(item) or no_baseline(len(spans), int(front["d_speech"]))
            for b, word_spans in enumerate(spans):
                rows.append(
                    {
                        "text": item[T.TEXT.name][b],
                        "text_mask": np.asarray(item[T.TEXT_MASK.name][b], bool),
                        "speech": item[T.SPEECH.name][b],
                        "speech_mask": np.asarray(item[T.SPEECH_MASK.name][b], bool),
                        "adjacency": time_aligned_adjacency(
                            item[T.OFFSETS.name][b],
                            item[T.TEXT_MASK.name][b],
                            word_spans,
                            item[T.FRAME_TIMES.name][b],
                            item[T.SPEECH_MASK.name][b],
                            rule,
                        ),
                        **{k: v[b] for k, v in baseline.items()},
                    }
                )
        batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        t = max(1, int(np.flatnonzero(batch["text_mask"].any(0)).max(initial=0)) + 1)
        f = max(1, int(np.flatnonzero(batch["speech_mask"].any(0)).max(initial=0)) + 1)
        for k in ("text", "text_mask"):
            batch[k] = batch[k][:, :t]
        for k in ("speech", "speech_mask"):
            batch[k] = batch[k][:, :f]
        edges = batch["adjacency"].sum((1, 2)).astype(np.int32).reshape(-1, 1)
        batch["adjacency"] = batch["adjacency"][:, :t, :f]
        batch["text"] = batch["text"].astype(np.float32)
        batch["speech"] = batch["speech"].astype(np.float32)
        graph = self.network.outputs(batch)["graph"].astype(np.float32)
        out, start = [], 0
        for item in items:
            n = item[T.TEXT.name].shape[0]
            out.append({T.GRAPH.name: graph[start : start + n], T.EDGES.name: edges[start : start + n]})
            start += n
        return out
