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

from services.join import JoinService, Parts, feature_rows, utterance_parts
from shared.alignment import timed_word_spans
from shared.contracts import ArrayPayload, Contract, GraphFeatures, Utterance
from shared.settings import Settings
from shared.triton_models import GraphGatTensors as T


def word_spans(utterances: Sequence[Utterance]) -> list[np.ndarray]:
    """Each utterance's words located in its transcript: ``[W, 4]`` rows (char start, char end,
    time start, time end)."""
    return [np.asarray(timed_word_spans(u.text, u.words), np.float64).reshape(-1, 4) for u in utterances]


class GraphGatService(JoinService):
    name = "graph_gat"
    triton_model = "graph_gat"

    def __init__(self, settings: Settings):
        super().__init__(settings, utterance_parts(settings.topics))
        self.output_topic = settings.topics.graph_features

    def complete(self, joined: Sequence[Parts]) -> list[Contract]:
        utterances: list[Utterance] = [j["utterance"] for j in joined]  # type: ignore[misc]
        request = feature_rows(joined).graph_gat_request(word_spans(utterances))
        out = self.model.infer(request, T.output_names())
        return [
            GraphFeatures(
                call_id=u.call_id,
                utterance_id=u.utterance_id,
                model_version=self.model_version,
                embedding=ArrayPayload.from_array(out[T.GRAPH.name][i], "float32"),
                edges=int(out[T.EDGES.name][i, 0]),
            )
            for i, u in enumerate(utterances)
        ]
