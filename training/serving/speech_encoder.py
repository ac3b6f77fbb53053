"""Triton model ``speech_encoder``: 16 kHz mono audio in, the speech encoder's frames out.

Inputs: ``AUDIO`` FP32 ``[B, N]`` (rows zero-padded to the longest, ``allow_ragged_batch``) and
``LENGTH`` INT32 ``[B, 1]`` (optional: real samples per row; without it every row is used whole).
Outputs: ``FRAMES`` FP16 ``[B, max_frames, D]`` (the hidden state of the exported
``speech_layer`` parameter, the last when empty; zero on padding), ``MASK`` BOOL
``[B, max_frames]``, ``FRAME_TIMES`` FP32 ``[B, max_frames, 2]`` (start/end seconds of each frame),
``DURATION`` FP32 ``[B, 1]`` (seconds).

Batching: every row of every request of a dynamic batch goes to one
:meth:`training.encoders.speech.SpeechEncoder.encode` call on the unpadded waveforms, which runs
equal-length windows together (no padding enters the encoder: Whisper has no attention mask) and
pools or pads each utterance to ``max_frames`` exactly as in-process encoding does.

A CPU instance runs the network ``emotion export`` wrote for ONNX Runtime and never imports torch
(:mod:`training.encoders.onnx`); a GPU instance runs it on torch.
"""

from __future__ import annotations

import numpy as np

from shared.triton_models import SpeechEncoderTensors as T
from training.serving.triton_base import TritonModelBase, ragged_rows


class TritonPythonModel(TritonModelBase):
    tensors = T

    def uses_torch(self) -> bool:
        return self.device != "cpu"

    def load(self, settings, params):
        from training.encoders.speech import SpeechEncoder

        # the reading this repository was exported for, whatever the environment says
        if "speech_layer" in params:
            settings.models.speech_layer = int(params["speech_layer"]) if params["speech_layer"] else None
        if "speech_level_dbfs" in params:
            level = params["speech_level_dbfs"]
            settings.models.speech_level_dbfs = float(level) if level else None
        if "speech_prosody" in params:
            settings.models.speech_prosody = bool(params["speech_prosody"])
        self.encoder = SpeechEncoder.from_bundle(
            settings,
            name=params.get("model_name") or None,
            device=self.device,
            threads=self.threads,
            runtime="torch" if self.uses_torch() else "onnx",
        )

    def infer(self, items):
        waves = [ragged_rows(np.asarray(item[T.AUDIO.name], np.float32), item.get(T.LENGTH.name)) for item in items]
        emb = self.encoder.encode([w for rows in waves for w in rows])
        out, start = [], 0
        for rows in waves:
            end = start + len(rows)
            out.append(
                {
                    T.FRAMES.name: emb.frames[start:end].astype(np.float16),
                    T.MASK.name: emb.mask[start:end],
                    T.FRAME_TIMES.name: emb.frame_times[start:end].astype(np.float32),
                    T.DURATION.name: emb.durations[start:end].reshape(-1, 1).astype(np.float32),
                }
            )
            start = end
        return out
