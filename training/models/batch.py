"""``FusionBatch``: the one input of every model, and ``collate`` that builds it from utterances.

Layout (``B`` utterances, ``T = max_tokens``, ``F = max_frames``):

=============  ===================  ==========================================================
field          shape / dtype        meaning
=============  ===================  ==========================================================
text           [B, T, Dt] float32   text encoder last hidden state (zero on padding)
text_mask      [B, T] bool          True for real tokens (specials and prompt prefix included)
speech         [B, F, Ds] float32   speech encoder frames (zero on padding)
speech_mask    [B, F] bool          True for frames carrying audio
edge_index     [2, E] int64         time-aligned edges ``(token node, frame node)`` in the
                                    batched node layout: token ``i`` of utterance ``b`` is node
                                    ``b*(T+F)+i``, frame ``j`` is node ``b*(T+F)+T+j``
labels         [B] int64 | None     class indices in ``FusionConfig.class_names`` order
graph          [B, Dg] | None       precomputed graph embeddings (serving: ``features.graph``);
                                    when set, models use it instead of running their GAT
speaker_count  [B] float | None     the speaker's earlier utterances in the call that the
                                    baseline pools (0: none, the model's prior alone)
speaker_mean   [B, Ds] | None       their pooled speech-frame mean ...
speaker_var    [B, Ds] | None       ... and variance (``shared.speaker_norm.FrameStatistics``);
                                    None: every utterance is its speaker's first
=============  ===================  ==========================================================

A missing modality is an all-False mask (its hidden states are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared.settings import EMOTIONS

from .config import EdgeRule
from .graph import TimeAlignedGAT, WordSpan, batch_edges, time_aligned_edges, timed_word_spans


@dataclass
class FusionBatch:
    """A batch of utterances as tensors (see the module docstring for the layout)."""

    text: Tensor
    text_mask: Tensor
    speech: Tensor
    speech_mask: Tensor
    edge_index: Tensor
    labels: Tensor | None = None
    graph: Tensor | None = None
    speaker_count: Tensor | None = None
    speaker_mean: Tensor | None = None
    speaker_var: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.text.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.text.shape[1])

    @property
    def num_frames(self) -> int:
        return int(self.speech.shape[1])

    @property
    def edge_counts(self) -> Tensor:
        """``[B]`` int64: number of time-aligned edges of each utterance."""
        owner = self.edge_index[0] // (self.num_tokens + self.num_frames)
        return torch.bincount(owner, minlength=self.batch_size)

    def without(self, text: Tensor, speech: Tensor) -> FusionBatch:
        """This batch with the text of the utterances where ``text`` (``[B]`` bool) is True and
        the speech where ``speech`` is True taken away: their masks all False, their hidden states
        zero and their time-aligned edges gone, exactly as an utterance that never had that
        modality. Modality dropout in training; an utterance keeps at least what is not dropped."""
        t_keep, s_keep = ~text.to(self.text.device), ~speech.to(self.text.device)
        owner = self.edge_index[0] // (self.num_tokens + self.num_frames)
        keep_edge = t_keep[owner] & s_keep[owner]
        return FusionBatch(
            text=self.text * t_keep[:, None, None],
            text_mask=self.text_mask & t_keep[:, None],
            speech=self.speech * s_keep[:, None, None],
            speech_mask=self.speech_mask & s_keep[:, None],
            edge_index=self.edge_index[:, keep_edge],
            labels=self.labels,
            graph=self.graph,
            speaker_count=self.speaker_count,
            speaker_mean=self.speaker_mean,
            speaker_var=self.speaker_var,
        )

    def with_speech(self, speech: Tensor) -> FusionBatch:
        """This batch with other speech frames (same shape and mask)."""
        return dataclasses.replace(self, speech=speech)

    def graph_embedding(self, gat: TimeAlignedGAT) -> Tensor:
        """The precomputed graph embedding (``graph``, e.g. from ``features.graph``) when the batch
        has one, else ``gat``'s embedding of its time-aligned graph."""
        if self.graph is not None:
            return self.graph
        return gat(self.text, self.text_mask, self.speech, self.speech_mask, self.edge_index)

    def to(self, device: torch.device | str) -> FusionBatch:
        return FusionBatch(**{k: None if v is None else v.to(device) for k, v in self.as_dict().items()})

    def as_dict(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def coerce(cls, batch: FusionBatch | Mapping[str, Any]) -> FusionBatch:
        """A ``FusionBatch`` from itself or from a mapping of tensors / numpy arrays with the same
        keys (``labels``, ``graph`` and the ``speaker_*`` baseline optional; ``edge_index`` optional:
        no edges)."""
        if isinstance(batch, FusionBatch):
            return batch
        unknown = set(batch) - {f.name for f in fields(cls)}
        missing = {"text", "text_mask", "speech", "speech_mask"} - set(batch)
        if unknown or missing:
            raise KeyError(f"FusionBatch keys: unknown {sorted(unknown)}, missing {sorted(missing)}")

        def tensor(key: str, dtype: torch.dtype) -> Tensor | None:
            v = batch.get(key)
            return None if v is None else torch.as_tensor(v).to(dtype)

        text, speech = torch.as_tensor(batch["text"]).float(), torch.as_tensor(batch["speech"]).float()
        edge_index = tensor("edge_index", torch.long)
        return cls(
            text=text,
            text_mask=torch.as_tensor(batch["text_mask"]).bool(),
            speech=speech,
            speech_mask=torch.as_tensor(batch["speech_mask"]).bool(),
            edge_index=torch.zeros(2, 0, dtype=torch.long, device=text.device) if edge_index is None else edge_index,
            labels=tensor("labels", torch.long),
            graph=tensor("graph", torch.float32),
            speaker_count=tensor("speaker_count", torch.float32),
            speaker_mean=tensor("speaker_mean", torch.float32),
            speaker_var=tensor("speaker_var", torch.float32),
        )


@dataclass
class UtteranceFeatures:
    """One utterance's encoder outputs and ASR words (numpy, as the encoders / feature topics give)."""

    text_hidden: np.ndarray
    """``[T, Dt]`` (``TextEmbedding.hidden[b]``; float16 accepted)."""
    text_mask: np.ndarray
    """``[T]`` bool."""
    token_offsets: np.ndarray
    """``[T, 2]`` character span of each token in ``transcript`` (``TextEmbedding.offsets[b]``)."""
    speech_frames: np.ndarray
    """``[F, Ds]`` (``SpeechEmbedding.frames[b]``)."""
    speech_mask: np.ndarray
    """``[F]`` bool."""
    frame_times: np.ndarray
    """``[F, 2]`` start/end seconds (``SpeechEmbedding.frame_times[b]``)."""
    transcript: str = ""
    words: Sequence[Any] = field(default_factory=list)
    """Whisper words: objects with ``text``/``start``/``end`` (``training.encoders.asr.Word``,
    ``shared.contracts.Word``), mappings with those keys, or ``(text, start, end)`` tuples."""
    word_spans: Sequence[WordSpan] | None = None
    """Precomputed ``(char_start, char_end, t_start, t_end)``; when given, ``words`` is ignored."""
    label: int | str | None = None
    """Class index, or class name in ``class_names``."""
    speaker_count: float = 0.0
    """The speaker's baseline before this utterance (see :class:`FusionBatch`): how many earlier
    utterances it pools (0: none) ..."""
    speaker_mean: np.ndarray | None = None
    """... their ``[Ds]`` frame mean ..."""
    speaker_var: np.ndarray | None = None
    """... and variance."""


def _field(example: UtteranceFeatures | Mapping[str, Any], name: str, default: Any = None) -> Any:
    if isinstance(example, Mapping):
        return example.get(name, default)
    return getattr(example, name)


def utterance_edges(example: UtteranceFeatures | Mapping[str, Any], rule: EdgeRule = "center") -> np.ndarray:
    """The ``[2, E]`` ``(token, frame)`` time-aligned edges of one utterance."""
    spans = _field(example, "word_spans")
    if spans is None:
        spans = timed_word_spans(_field(example, "transcript", "") or "", _field(example, "words", ()) or ())
    return time_aligned_edges(
        _field(example, "token_offsets"),
        _field(example, "text_mask"),
        spans,
        _field(example, "frame_times"),
        _field(example, "speech_mask"),
        rule=rule,
    )


def collate(
    examples: Sequence[UtteranceFeatures | Mapping[str, Any]],
    *,
    edge_rule: EdgeRule = "center",
    class_names: Sequence[str] = EMOTIONS,
) -> FusionBatch:
    """Stack utterances into a :class:`FusionBatch`, computing each time-aligned graph.

    Examples are :class:`UtteranceFeatures` or mappings with the same keys; all must share ``T``,
    ``F`` and the hidden sizes (the encoders always emit ``max_tokens`` / ``max_frames``).
    ``labels`` is set only when every example has a label.
    """
    if not examples:
        raise ValueError("collate() needs at least one utterance")

    def stack(name: str, dtype: Any) -> Tensor:
        return torch.from_numpy(np.stack([np.asarray(_field(e, name), dtype=dtype) for e in examples]))

    text, speech = stack("text_hidden", np.float32), stack("speech_frames", np.float32)
    edges = batch_edges([utterance_edges(e, edge_rule) for e in examples], text.shape[1], speech.shape[1])
    labels = [_field(e, "label") for e in examples]
    index = {name: i for i, name in enumerate(class_names)}
    label_ids = None if any(y is None for y in labels) else [index[y] if isinstance(y, str) else int(y) for y in labels]
    counts = [float(_field(e, "speaker_count", 0.0) or 0.0) for e in examples]
    baseline: dict[str, Tensor | None] = {"speaker_count": None, "speaker_mean": None, "speaker_var": None}
    if any(counts):
        zeros = np.zeros(speech.shape[-1], np.float32)

        def baseline_of(name: str) -> Tensor:
            values = [_field(e, name) for e in examples]
            return torch.from_numpy(np.stack([zeros if v is None else np.asarray(v, np.float32) for v in values]))

        baseline = {
            "speaker_count": torch.tensor(counts, dtype=torch.float32),
            "speaker_mean": baseline_of("speaker_mean"),
            "speaker_var": baseline_of("speaker_var"),
        }
    return FusionBatch(
        text=text,
        text_mask=stack("text_mask", bool),
        speech=speech,
        speech_mask=stack("speech_mask", bool),
        edge_index=torch.from_numpy(edges),
        labels=None if label_ids is None else torch.tensor(label_ids, dtype=torch.long),
        **baseline,
    )
