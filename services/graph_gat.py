"""Graph service: ``utterances`` + ``features.text`` + ``features.speech`` -> ``features.graph``.

Joins each utterance's transcript and word timestamps with its token and frame features, locates
the words in the transcript (:func:`training.models.timed_word_spans`: token spans to words to
times) and asks the ``graph_gat`` Triton model for the time-aligned GAT embedding: an edge joins
token i and frame j when frame j's time lies within token i's word.  No words, no speech or no
overlap gives no edges and still a finite embedding (the fusion service flags it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.join import JoinService, Parts, utterance_parts
from shared.alignment import timed_word_spans
from shared.contracts import ArrayPayload, Contract, GraphFeatures, SpeechFeatures, TextFeatures, Utterance
from shared.settings import Settings


def speaker_baseline_inputs(speech: Sequence[SpeechFeatures], dim: int) -> dict[str, np.ndarray]:
    """``SPEAKER_MEAN`` / ``SPEAKER_VAR`` FP32 ``[B, dim]`` and ``SPEAKER_COUNT`` FP32 ``[B, 1]``:
    each utterance's speaker baseline (zeros and count 0, the model's prior alone, when the speech
    features carry none: version 1 messages)."""
    mean, var = np.zeros((len(speech), dim), np.float32), np.zeros((len(speech), dim), np.float32)
    count = np.zeros((len(speech), 1), np.float32)
    for i, s in enumerate(speech):
        if s.baseline is not None and s.baseline.utterances > 0:
            mean[i], var[i], count[i, 0] = s.baseline.mean.to_array(), s.baseline.var.to_array(), s.baseline.utterances
    return {"SPEAKER_MEAN": mean, "SPEAKER_VAR": var, "SPEAKER_COUNT": count}


def stack_features(joined: Sequence[Parts]) -> dict[str, np.ndarray]:
    """The text and speech features (with the speakers' baselines) of joined utterances as Triton's
    batched inputs."""
    text: list[TextFeatures] = [j["text"] for j in joined]  # type: ignore[misc]
    speech: list[SpeechFeatures] = [j["speech"] for j in joined]  # type: ignore[misc]
    frames = np.stack([s.frames.to_array() for s in speech]).astype(np.float16)
    return {
        "TEXT": np.stack([t.hidden.to_array() for t in text]).astype(np.float16),
        "TEXT_MASK": np.stack([t.mask.to_array() for t in text]).astype(bool),
        "OFFSETS": np.stack([t.offsets.to_array() for t in text]).astype(np.int32),
        "SPEECH": frames,
        "SPEECH_MASK": np.stack([s.mask.to_array() for s in speech]).astype(bool),
        "FRAME_TIMES": np.stack([s.frame_times.to_array() for s in speech]).astype(np.float32),
        **speaker_baseline_inputs(speech, frames.shape[-1]),
    }


def word_span_inputs(utterances: Sequence[Utterance]) -> dict[str, np.ndarray]:
    """``WORD_SPANS`` FP64 ``[B, W, 4]`` (char start, char end, time start, time end; zero rows
    pad) and ``WORD_COUNT`` INT32 ``[B, 1]`` from each utterance's transcript and words."""
    spans = [np.asarray(timed_word_spans(u.text, u.words), np.float64).reshape(-1, 4) for u in utterances]
    width = max(1, max(len(s) for s in spans))
    padded = np.zeros((len(spans), width, 4), np.float64)
    for i, s in enumerate(spans):
        padded[i, : len(s)] = s
    return {"WORD_SPANS": padded, "WORD_COUNT": np.array([[len(s)] for s in spans], np.int32).reshape(-1, 1)}


class GraphGatService(JoinService):
    name = "graph_gat"
    triton_model = "graph_gat"

    def __init__(self, settings: Settings):
        super().__init__(settings, utterance_parts(settings.topics))
        self.output_topic = settings.topics.graph_features

    def complete(self, joined: Sequence[Parts]) -> list[Contract]:
        utterances: list[Utterance] = [j["utterance"] for j in joined]  # type: ignore[misc]
        out = self.model.infer({**stack_features(joined), **word_span_inputs(utterances)}, ["GRAPH", "EDGES"])
        return [
            GraphFeatures(call_id=u.call_id, utterance_id=u.utterance_id, model_version=self.model_version,
                          embedding=ArrayPayload.from_array(out["GRAPH"][i], "float32"), edges=int(out["EDGES"][i, 0]))
            for i, u in enumerate(utterances)
        ]  # fmt: skip
