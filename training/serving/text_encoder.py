"""Triton model ``text_encoder``: transcripts in, the text encoder's last hidden state out.

Inputs: ``TEXT`` BYTES [B, 1].  Outputs: ``HIDDEN`` FP16 [B, max_tokens, dim], ``MASK`` BOOL
[B, max_tokens], ``OFFSETS`` INT32 [B, max_tokens, 2] (each token's character span).

A CPU instance runs the network ``emotion export`` wrote for ONNX Runtime and never imports torch
(:mod:`training.encoders.onnx`); a GPU instance runs it on torch.
"""

from __future__ import annotations

import numpy as np

from shared.triton_models import TextEncoderTensors as T
from training.serving.triton_base import TritonModelBase, decode_strings


class TritonPythonModel(TritonModelBase):
    tensors = T

    def uses_torch(self) -> bool:
        return self.device != "cpu"

    def load(self, settings, params):
        from training.encoders.text import TextEncoder

        self.encoder = TextEncoder.from_bundle(
            settings,
            name=params.get("model_name") or None,
            device=self.device,
            threads=self.threads,
            runtime="torch" if self.uses_torch() else "onnx",
        )

    def run(self, batch):
        emb = self.encoder.encode(decode_strings(batch[T.TEXT.name]))
        return {
            T.HIDDEN.name: emb.hidden.astype(np.float16),
            T.MASK.name: emb.mask.astype(bool),
            T.OFFSETS.name: emb.offsets.astype(np.int32),
        }
