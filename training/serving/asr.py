"""Triton model ``asr``: 16 kHz mono audio in, Whisper's transcript with word timestamps out.

Inputs (one utterance per row; see :mod:`training.serving.repository` for the whole contract):

* ``AUDIO`` FP32 ``[B, N]``: 16 kHz mono samples in [-1, 1], rows zero-padded to the longest;
  ``allow_ragged_batch``, so requests of different lengths share a dynamic batch.
* ``LENGTH`` INT32 ``[B, 1]`` (optional): real samples per row; without it every row is used whole.
* ``LANGUAGE`` BYTES ``[B, 1]`` (optional): Whisper language code per row; empty = the configured
  one (``language`` parameter / ``EMOTION_MODELS__LANGUAGE``), else detected.

Outputs: ``TEXT`` BYTES ``[B, 1]``, ``LANGUAGE`` BYTES ``[B, 1]`` (given or detected),
``WORDS`` BYTES ``[B, 1]`` (UTF-8 JSON list of ``{"text", "start", "end", "probability"}``,
seconds from the start of the row; :func:`shared.alignment.words_from_json` decodes it), ``DURATION`` FP32 ``[B, 1]``.

Batching: Whisper decoding is sequential and not batch-friendly on CPU, so the rows of a dynamic
batch are transcribed one after another by :class:`training.encoders.asr.Transcriber` (the same
object and settings as in-process transcription); batching only saves round trips.
"""

from __future__ import annotations

import numpy as np

from shared.alignment import words_to_json
from shared.triton_models import AsrTensors as T
from training.serving.triton_base import TritonModelBase, decode_strings, ragged_rows, to_bytes_array


class TritonPythonModel(TritonModelBase):
    tensors = T

    def load(self, settings, params):
        from training.encoders.asr import Transcriber

        if params.get("language"):
            settings.models.language = params["language"]
        self.transcriber = Transcriber.from_bundle(
            settings,
            name=params.get("model_name") or None,
            device=self.device,  # "cpu" or "cuda:<id>" (faster-whisper then computes in float16)
            cpu_threads=self.threads,
            beam_size=int(params.get("beam_size", "1")),
        )

    def served_version(self):
        return self.transcriber.version

    def infer(self, items):
        out = []
        for item in items:
            audio = np.asarray(item[T.AUDIO.name], np.float32)
            rows = ragged_rows(audio, item.get(T.LENGTH.name))
            languages = decode_strings(item.get(T.LANGUAGE.name)) or [""] * len(rows)
            if len(languages) != len(rows):
                raise ValueError(f"{len(languages)} LANGUAGE values for {len(rows)} AUDIO rows")
            transcripts = [
                self.transcriber.transcribe(a, language=lang or None) for a, lang in zip(rows, languages, strict=True)
            ]
            out.append(
                {
                    T.TEXT.name: to_bytes_array([t.text for t in transcripts]),
                    T.DETECTED_LANGUAGE.name: to_bytes_array([t.language or "" for t in transcripts]),
                    T.WORDS.name: to_bytes_array([words_to_json(t.words) for t in transcripts]),
                    T.DURATION.name: np.array([[t.duration] for t in transcripts], np.float32).reshape(-1, 1),
                }
            )
        return out
