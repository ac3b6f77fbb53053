"""Triton model ``asr``: 16 kHz mono audio in, Whisper's transcript with word timestamps out.

Inputs (one utterance per row; see :mod:`training.serving.repository` for the whole contract):

* ``AUDIO`` FP32 ``[B, N]``: 16 kHz mono samples in [-1, 1], rows zero-padded to the longest;
  ``allow_ragged_batch``, so requests of different lengths share a dynamic batch.
* ``LENGTH`` INT32 ``[B, 1]`` (optional): real samples per row; without it every row is used whole.
* ``LANGUAGE`` BYTES ``[B, 1]`` (optional): Whisper language code per row; empty = the configured
  one (``language`` parameter / ``EMOTION_MODELS__LANGUAGE``), else detected.

Outputs: ``TEXT`` BYTES ``[B, 1]``, ``LANGUAGE`` BYTES ``[B, 1]`` (given or detected),
``WORDS`` BYTES ``[B, 1]`` (UTF-8 JSON list of ``{"text", "start", "end", "probability"}``,
seconds from the start of the row; :func:`shared.alignment.words_from_json` decodes it), ``DURATION`` FP32 ``[B, 1]``,
``WINDOW`` INT32 ``[B, 1]`` (utterances that shared the row's Whisper window; 0: not decoded).

Batching: with the ``packing`` parameter (``models.asr_packing``), the rows of every request in a
dynamic batch -- the utterances that queued while this instance was busy -- are packed into shared
Whisper windows by :meth:`training.encoders.asr.Transcriber.transcribe_many`
(:mod:`training.encoders.packing`), so a busy instance catches up at several utterances per
encoder pass; without it they are transcribed one after another. Either way it is the same
object and settings as in-process transcription.
"""

from __future__ import annotations

import numpy as np

from shared.alignment import words_to_json
from shared.triton_models import AsrTensors as T
from training.encoders.packing import PackingOptions
from training.serving.triton_base import TritonModelBase, decode_strings, ragged_rows, to_bytes_array


class TritonPythonModel(TritonModelBase):
    tensors = T

    def uses_torch(self) -> bool:
        return False  # CTranslate2 threads: cpu_threads below

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
            window_s=float(params["window_s"]) if params.get("window_s") else None,
        )
        self.packing = (
            PackingOptions(max_window_s=float(params["pack_window_s"]), gap_s=float(params["pack_gap_s"]))
            if params.get("packing")
            else None
        )

    def served_version(self):
        return self.transcriber.version

    def infer(self, items):
        requests = []  # (rows, languages) of each request
        for item in items:
            audio = np.asarray(item[T.AUDIO.name], np.float32)
            rows = ragged_rows(audio, item.get(T.LENGTH.name))
            languages = decode_strings(item.get(T.LANGUAGE.name)) or [""] * len(rows)
            if len(languages) != len(rows):
                raise ValueError(f"{len(languages)} LANGUAGE values for {len(rows)} AUDIO rows")
            requests.append((rows, [lang or None for lang in languages]))
        # every row of every request in one call, so that the waiting utterances share windows
        every = self.transcriber.transcribe_many(
            [a for rows, _ in requests for a in rows],
            [lang for _, languages in requests for lang in languages],
            packing=self.packing,
        )
        out, start = [], 0
        for rows, _ in requests:
            transcripts, start = every[start : start + len(rows)], start + len(rows)
            out.append(
                {
                    T.TEXT.name: to_bytes_array([t.text for t in transcripts]),
                    T.DETECTED_LANGUAGE.name: to_bytes_array([t.language or "" for t in transcripts]),
                    T.WORDS.name: to_bytes_array([words_to_json(t.words) for t in transcripts]),
                    T.DURATION.name: np.array([[t.duration] for t in transcripts], np.float32).reshape(-1, 1),
                    T.WINDOW.name: np.array([[t.window] for t in transcripts], np.int32).reshape(-1, 1),
                }
            )
        return out
