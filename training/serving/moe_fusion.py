"""Triton model ``moe_fusion``: the trained model after its GAT, on a precomputed graph embedding.

Inputs: ``TEXT`` FP16 ``[B, T, Dt]``, ``TEXT_MASK`` BOOL ``[B, T]``, ``SPEECH`` FP16 ``[B, F, Ds]``,
``SPEECH_MASK`` BOOL ``[B, F]``, ``GRAPH`` FP32 ``[B, d_graph]`` (the ``graph_gat`` output).
Outputs, FP32 ``[B, n_classes]`` in the order of the ``class_names`` parameter: ``PROBS`` (fused),
``LOGITS`` (fused; ``softmax(LOGITS) == PROBS``), ``CA_PROBS`` / ``SP_PROBS`` (softmax of the CA-MoE /
SP-MoE branch logits; all zeros when the model has no such branch).  The served trained model is the
``model_version`` parameter (``<registry name>@<sha256 of model.pt>``).

The model's own ``forward`` runs on a :class:`training.models.FusionBatch` whose ``graph`` field
holds ``GRAPH`` (its GAT is then skipped): the same computation as in-process, for the proposed
model and every baseline. A CPU instance runs it as the version folder's ``network/`` on ONNX
Runtime and never imports torch (:mod:`training.serving.networks`); a GPU instance on torch.
"""

from __future__ import annotations

import numpy as np

from shared.triton_models import MoeFusionTensors as T
from training.serving.networks import has_network, load_network, no_baseline
from training.serving.triton_base import TritonModelBase, speaker_baseline


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
        # given each utterance's graph embedding: no GAT layers, no torch-geometric (~0.2 GB less)
        self.model, _ = load_model(directory, device=self.device, with_gat=False)
        self.version = model_version(directory)

    def served_version(self):
        return self.version

    def run(self, batch):
        if not self.uses_torch():
            return self.run_network(batch)
        import torch

        from training.models import FusionBatch

        fusion_batch = FusionBatch.coerce(
            {
                "text": batch[T.TEXT.name],
                "text_mask": batch[T.TEXT_MASK.name],
                "speech": batch[T.SPEECH.name],
                "speech_mask": batch[T.SPEECH_MASK.name],
                "graph": batch[T.GRAPH.name],
                **speaker_baseline(batch),
            }
        ).to(self.device)
        with torch.inference_mode():
            out = self.model(fusion_batch)
        probs = out.probs.float().cpu().numpy()
        result = {T.PROBS.name: probs, T.LOGITS.name: out.logits.float().cpu().numpy()}
        for branch, name in T.BRANCHES.items():
            logits = out.branch_logits.get(branch)
            result[name] = np.zeros_like(probs) if logits is None else torch.softmax(logits.float(), -1).cpu().numpy()
        return result

    def run_network(self, batch):
        """The model on ONNX Runtime (no baseline given: each utterance a speaker's first)."""
        rows = batch[T.TEXT.name].shape[0]
        baseline = speaker_baseline(batch) or no_baseline(rows, int(self.network.front_end["d_speech"]))
        out = self.network.outputs(
            {
                "text": batch[T.TEXT.name].astype(np.float32),
                "text_mask": batch[T.TEXT_MASK.name].astype(bool),
                "speech": batch[T.SPEECH.name].astype(np.float32),
                "speech_mask": batch[T.SPEECH_MASK.name].astype(bool),
                "graph": batch[T.GRAPH.name].astype(np.float32),
                **baseline,
            }
        )
        return {
            T.PROBS.name: out["probs"],
            T.LOGITS.name: out["logits"],
            T.BRANCHES["ca_moe"]: out["ca_probs"],
            T.BRANCHES["sp_moe"]: out["sp_probs"],
        }
