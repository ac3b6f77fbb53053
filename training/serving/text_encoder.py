"""Triton model ``text_encoder``: transcripts in, the text encoder's last hidden state out.

Inputs: ``TEXT`` BYTES [B, 1].  Outputs: ``HIDDEN`` FP16 [B, max_tokens, dim], ``MASK`` BOOL
[B, max_tokens], ``OFFSETS`` INT32 [B, max_tokens, 2] (each token's character span).
"""

from __future__ import annotations

import numpy as np

from training.serving.triton_base import TritonModelBase


class TritonPythonModel(TritonModelBase):
    inputs = ("TEXT",)
    outputs = ("HIDDEN", "MASK", "OFFSETS")

    def load(self, settings, params):
        from training.encoders.text import TextEncoder

        self.encoder = TextEncoder.from_bundle(settings, name=params.get("model_name") or None, device=self.device)

    def run(self, batch):
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in batch["TEXT"].reshape(-1)]
        emb = self.encoder.encode(texts)
        return {
            "HIDDEN": emb.hidden.astype(np.float16),
            "MASK": emb.mask.astype(bool),
            "OFFSETS": emb.offsets.astype(np.int32),
        }
