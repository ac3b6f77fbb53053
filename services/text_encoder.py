"""Text encoding service: ``utterances`` -> ``features.text``.

Each utterance's transcript goes through the ``text_encoder`` Triton model (last hidden state,
128 tokens, with each token's character span for the time-aligned graph).  Features are cached
in Redis by (model version, transcript), so a repeated phrase costs one look-up.
"""

from __future__ import annotations

import json

from services.triton_service import TritonService
from shared.cache import content_key
from shared.contracts import ArrayPayload, TextFeatures, Utterance
from shared.settings import Settings
from shared.triton_models import TextEncoderTensors as T
from shared.triton_models import text_encoder_request


class TextEncoderService(TritonService):
    name = "text_encoder"
    triton_model = "text_encoder"
    input_contract = Utterance

    def __init__(self, settings: Settings):
        self.input_topic = settings.topics.utterances
        self.output_topic = settings.topics.text_features

    def process(self, batch: list[Utterance]) -> list[list[TextFeatures]]:
        keys = [content_key("text", self.model_version, u.text) for u in batch]
        cached = self.ctx.cache.get_many(keys)
        misses = [i for i, v in enumerate(cached) if v is None]
        hits = len(batch) - len(misses)
        self.ctx.metrics.cache.labels(self.name, "hit").inc(hits)
        self.ctx.metrics.cache.labels(self.name, "miss").inc(len(misses))
        features: list[dict | None] = [json.loads(v) if v is not None else None for v in cached]
        if misses:
            out = self.model.infer(text_encoder_request([batch[i].text for i in misses]), T.output_names())
            fresh = []
            for row, i in enumerate(misses):
                f = {
                    "hidden": ArrayPayload.from_array(out[T.HIDDEN.name][row], "float16").model_dump(),
                    "mask": ArrayPayload.from_array(out[T.MASK.name][row]).model_dump(),
                    "offsets": ArrayPayload.from_array(out[T.OFFSETS.name][row], "int32").model_dump(),
                }
                features[i] = f
                fresh.append((keys[i], json.dumps(f).encode()))
            self.ctx.cache.put_many(fresh)
        return [
            [
                TextFeatures(
                    call_id=u.call_id,
                    utterance_id=u.utterance_id,
                    model_version=self.model_version,
                    cached=cached[i] is not None,
                    **features[i],
                )
            ]
            for i, u in enumerate(batch)
        ]
