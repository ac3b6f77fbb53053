"""The tensors of the five Triton models, declared once, and the requests built from them.

Torch-free: the repository writer renders each model's ``config.pbtxt`` from these declarations
(:mod:`training.serving.repository`), each ``TritonPythonModel`` reads and writes the tensors they
name (:mod:`training.serving.triton_base`), and the services and the model benchmark build their
requests with the builders below.  A tensor's name, data type and shape are written here and
nowhere else in product code.

Shapes leave out the batch dimension ``B`` (every model has ``max_batch_size > 0``).  Symbolic
sizes are resolved by :meth:`TritonModelTensors.sized` when a repository is exported: ``T`` =
``models.max_tokens`` and ``F`` = ``models.max_frames`` (both 128), ``Dt`` / ``Ds`` / ``Dg`` the
text, speech and graph widths, ``C`` the number of classes; ``-1`` is variable.

Variable lengths: ``AUDIO`` rows are zero-padded to the longest utterance of the request, with
``LENGTH`` giving each row's real sample count (without ``LENGTH`` every row is used whole);
``WORD_SPANS`` rows ``(char_start, char_end, t_start, t_end)`` are zero-padded (a zero row is no
word) with optional ``WORD_COUNT``.  These inputs have ``allow_ragged_batch``, so the dynamic
batcher also merges requests of different lengths; the Python backend receives them as separate
requests and handles each at its own length (no cross-request padding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    """Triton type without the ``TYPE_`` prefix: FP32, FP16, FP64, INT32, BOOL, STRING."""
    dims: tuple[int | str, ...]
    """Without the batch dimension; a string is a size resolved at export (see the module docstring)."""
    optional: bool = False
    """Inputs only: the client may leave it out (``optional: true``)."""
    ragged: bool = False
    """Inputs only: requests of different shapes may share a dynamic batch (``allow_ragged_batch``)."""

    def sized(self, sizes: Mapping[str, int]) -> Tensor:
        """This tensor with its symbolic dims replaced by ``sizes``."""
        try:
            return replace(self, dims=tuple(sizes[d] if isinstance(d, str) else d for d in self.dims))
        except KeyError as exc:
            raise ValueError(f"tensor {self.name}: no size given for dim {exc.args[0]!r}") from None


class TritonModelTensors:
    """One Triton model's inputs and outputs, in their ``config.pbtxt`` order."""

    model: ClassVar[str]
    inputs: ClassVar[tuple[Tensor, ...]]
    outputs: ClassVar[tuple[Tensor, ...]]

    @classmethod
    def required_inputs(cls) -> tuple[str, ...]:
        """Names of the inputs every request carries; the first gives the request's batch size."""
        return tuple(t.name for t in cls.inputs if not t.optional)

    @classmethod
    def optional_inputs(cls) -> tuple[str, ...]:
        return tuple(t.name for t in cls.inputs if t.optional)

    @classmethod
    def output_names(cls) -> tuple[str, ...]:
        return tuple(t.name for t in cls.outputs)

    @classmethod
    def sized(cls, **sizes: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Inputs and outputs with concrete shapes (``T``, ``F``, ``Dt`` ... given by keyword)."""
        return tuple(t.sized(sizes) for t in cls.inputs), tuple(t.sized(sizes) for t in cls.outputs)


# The speaker's frame statistics before the utterance, optional inputs of the trained models:
# left out, the model normalises the frames with its prior alone.
SPEAKER_MEAN = Tensor("SPEAKER_MEAN", "FP32", ("Ds",), optional=True)
SPEAKER_VAR = Tensor("SPEAKER_VAR", "FP32", ("Ds",), optional=True)
SPEAKER_COUNT = Tensor("SPEAKER_COUNT", "FP32", (1,), optional=True)
SPEAKER_BASELINE = (SPEAKER_MEAN, SPEAKER_VAR, SPEAKER_COUNT)


class AsrTensors(TritonModelTensors):
    """Whisper with word timestamps: 16 kHz mono audio in [-1, 1], one utterance per row."""

    model = "asr"
    AUDIO = Tensor("AUDIO", "FP32", (-1,), ragged=True)
    LENGTH = Tensor("LENGTH", "INT32", (1,), optional=True)
    LANGUAGE = Tensor("LANGUAGE", "STRING", (1,), optional=True)
    """Whisper language code per row; empty: the configured one, else detected."""
    TEXT = Tensor("TEXT", "STRING", (1,))
    DETECTED_LANGUAGE = Tensor(LANGUAGE.name, "STRING", (1,))
    """The language given, or the one Whisper detected."""
    WORDS = Tensor("WORDS", "STRING", (1,))
    """UTF-8 JSON list of ``{"text", "start", "end", "probability"}`` (:func:`shared.alignment.words_from_json`)."""
    DURATION = Tensor("DURATION", "FP32", (1,))
    WINDOW = Tensor("WINDOW", "INT32", (1,))
    """How many utterances shared the row's Whisper window (packing: ``models.asr_packing``): 1
    alone, more when utterances queued; 0 when Whisper did not run (silence, too short)."""
    inputs = (AUDIO, LENGTH, LANGUAGE)
    outputs = (TEXT, DETECTED_LANGUAGE, WORDS, DURATION, WINDOW)


class TextEncoderTensors(TritonModelTensors):
    """The text encoder's last hidden state, padded or truncated to ``T`` tokens."""

    model = "text_encoder"
    TEXT = Tensor("TEXT", "STRING", (1,))
    HIDDEN = Tensor("HIDDEN", "FP16", ("T", "Dt"))
    MASK = Tensor("MASK", "BOOL", ("T",))
    OFFSETS = Tensor("OFFSETS", "INT32", ("T", 2))
    """Each token's character span in the transcript."""
    inputs = (TEXT,)
    outputs = (HIDDEN, MASK, OFFSETS)


class SpeechEncoderTensors(TritonModelTensors):
    """The speech encoder's frames, padded or pooled to ``F``, with each frame's start and end (s)."""

    model = "speech_encoder"
    AUDIO = Tensor("AUDIO", "FP32", (-1,), ragged=True)
    LENGTH = Tensor("LENGTH", "INT32", (1,), optional=True)
    FRAMES = Tensor("FRAMES", "FP16", ("F", "Ds"))
    MASK = Tensor("MASK", "BOOL", ("F",))
    FRAME_TIMES = Tensor("FRAME_TIMES", "FP32", ("F", 2))
    DURATION = Tensor("DURATION", "FP32", (1,))
    inputs = (AUDIO, LENGTH)
    outputs = (FRAMES, MASK, FRAME_TIMES, DURATION)


class GraphGatTensors(TritonModelTensors):
    """The trained model's time-aligned GAT: encoder features and word spans in, graph embedding out.

    ``WORD_SPANS`` is FP64, not FP32: word times are Python floats everywhere else, and a frame whose
    centre falls exactly on a word boundary would flip its edge if the boundary were rounded."""

    model = "graph_gat"
    TEXT = Tensor("TEXT", "FP16", ("T", "Dt"))
    TEXT_MASK = Tensor("TEXT_MASK", "BOOL", ("T",))
    OFFSETS = Tensor("OFFSETS", "INT32", ("T", 2))
    SPEECH = Tensor("SPEECH", "FP16", ("F", "Ds"))
    SPEECH_MASK = Tensor("SPEECH_MASK", "BOOL", ("F",))
    FRAME_TIMES = Tensor("FRAME_TIMES", "FP32", ("F", 2))
    WORD_SPANS = Tensor("WORD_SPANS", "FP64", (-1, 4), ragged=True)
    WORD_COUNT = Tensor("WORD_COUNT", "INT32", (1,), optional=True)
    GRAPH = Tensor("GRAPH", "FP32", ("Dg",))
    EDGES = Tensor("EDGES", "INT32", (1,))
    inputs = (TEXT, TEXT_MASK, OFFSETS, SPEECH, SPEECH_MASK, FRAME_TIMES, WORD_SPANS, WORD_COUNT, *SPEAKER_BASELINE)
    outputs = (GRAPH, EDGES)


class MoeFusionTensors(TritonModelTensors):
    """The trained model after its GAT (CA-MoE, SP-MoE, late fusion) on a given graph embedding.
    Outputs in the order of the ``class_names`` parameter; a branch the model lacks is all zeros."""

    model = "moe_fusion"
    TEXT, TEXT_MASK = GraphGatTensors.TEXT, GraphGatTensors.TEXT_MASK
    SPEECH, SPEECH_MASK = GraphGatTensors.SPEECH, GraphGatTensors.SPEECH_MASK
    GRAPH = Tensor(GraphGatTensors.GRAPH.name, "FP32", ("Dg",))
    PROBS = Tensor("PROBS", "FP32", ("C",))
    LOGITS = Tensor("LOGITS", "FP32", ("C",))
    CA_PROBS = Tensor("CA_PROBS", "FP32", ("C",))
    SP_PROBS = Tensor("SP_PROBS", "FP32", ("C",))
    inputs = (TEXT, TEXT_MASK, SPEECH, SPEECH_MASK, GRAPH, *SPEAKER_BASELINE)
    outputs = (PROBS, LOGITS, CA_PROBS, SP_PROBS)
    BRANCHES: ClassVar[dict[str, str]] = {"ca_moe": CA_PROBS.name, "sp_moe": SP_PROBS.name}
    """Each late-fusion branch -> the output with its probabilities."""


TRITON_MODELS: dict[str, type[TritonModelTensors]] = {
    m.model: m for m in (AsrTensors, TextEncoderTensors, SpeechEncoderTensors, GraphGatTensors, MoeFusionTensors)
}


# ---- requests ------------------------------------------------------------------------------------


def pad_rows(rows: Sequence[np.ndarray], dtype: type | np.dtype = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Client side of the ragged inputs: rows ``[n_i, ...]`` -> zero-padded ``[B, max n_i, ...]``
    and their lengths ``INT32 [B, 1]`` (``AUDIO`` + ``LENGTH``, ``WORD_SPANS`` + ``WORD_COUNT``)."""
    arrays = [np.asarray(r, dtype) for r in rows]
    width = max((len(a) for a in arrays), default=0)
    tail = next((a.shape[1:] for a in arrays if a.ndim > 1), ())
    out = np.zeros((len(arrays), width, *tail), dtype)
    for i, a in enumerate(arrays):
        if len(a):
            out[i, : len(a)] = a
    return out, np.array([[len(a)] for a in arrays], np.int32).reshape(-1, 1)


def strings(values: Sequence[str]) -> np.ndarray:
    """A STRING input ``[B, 1]`` from one string per row."""
    return np.array([[v] for v in values], dtype=object).reshape(-1, 1)


def asr_request(waves: Sequence[np.ndarray], languages: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Utterances' 16 kHz float samples (and Whisper language codes; empty: configured or detected)."""
    audio, length = pad_rows(waves)
    request = {AsrTensors.AUDIO.name: audio, AsrTensors.LENGTH.name: length}
    if languages is not None:
        request[AsrTensors.LANGUAGE.name] = strings(languages)
    return request


def text_encoder_request(texts: Sequence[str]) -> dict[str, np.ndarray]:
    return {TextEncoderTensors.TEXT.name: strings(texts)}


def speech_encoder_request(waves: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Utterances' 16 kHz float samples."""
    audio, length = pad_rows(waves)
    return {SpeechEncoderTensors.AUDIO.name: audio, SpeechEncoderTensors.LENGTH.name: length}


@dataclass
class FeatureRows:
    """Utterances' encoder features, row for row, as the trained models' batched inputs take them
    (the encoders' outputs, or the ``features.*`` messages stacked)."""

    text_hidden: np.ndarray
    text_mask: np.ndarray
    token_offsets: np.ndarray
    speech_frames: np.ndarray
    speech_mask: np.ndarray
    frame_times: np.ndarray
    speaker_mean: np.ndarray | None = None
    """``[B, Ds]``, with ``speaker_var`` and ``speaker_count`` ``[B, 1]``: each utterance's speaker
    baseline (count 0: none yet). None: the model's prior alone."""
    speaker_var: np.ndarray | None = None
    speaker_count: np.ndarray | None = None

    def _common(self) -> dict[str, np.ndarray]:
        m = MoeFusionTensors
        out = {
            m.TEXT.name: np.asarray(self.text_hidden, np.float16),
            m.TEXT_MASK.name: np.asarray(self.text_mask, bool),
            m.SPEECH.name: np.asarray(self.speech_frames, np.float16),
            m.SPEECH_MASK.name: np.asarray(self.speech_mask, bool),
        }
        if self.speaker_mean is not None and self.speaker_var is not None and self.speaker_count is not None:
            out[SPEAKER_MEAN.name] = np.asarray(self.speaker_mean, np.float32)
            out[SPEAKER_VAR.name] = np.asarray(self.speaker_var, np.float32)
            out[SPEAKER_COUNT.name] = np.asarray(self.speaker_count, np.float32).reshape(-1, 1)
        return out

    def graph_gat_request(self, word_spans: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """With each row's word spans ``[W_i, 4]`` ``(char_start, char_end, t_start, t_end)``."""
        g = GraphGatTensors
        spans, count = pad_rows([np.asarray(s, np.float64).reshape(-1, 4) for s in word_spans], np.float64)
        if spans.shape[1] == 0:  # no row has a word: one zero row each (a zero row is no word)
            spans = np.zeros((len(word_spans), 1, 4), np.float64)
        return {
            **self._common(),
            g.OFFSETS.name: np.asarray(self.token_offsets, np.int32),
            g.FRAME_TIMES.name: np.asarray(self.frame_times, np.float32),
            g.WORD_SPANS.name: spans,
            g.WORD_COUNT.name: count,
        }

    def moe_fusion_request(self, graph: np.ndarray) -> dict[str, np.ndarray]:
        """With each row's graph embedding (the ``graph_gat`` output)."""
        return {**self._common(), MoeFusionTensors.GRAPH.name: np.asarray(graph, np.float32)}
