"""Fusion service: an utterance's text, speech and graph features -> its ``emotions`` event.

Joins the utterance (speaker, times, transcript) with its three feature messages and asks the
``moe_fusion`` Triton model for the late fusion of the CA-MoE and SP-MoE branches.  Each event
carries the probabilities of every class, each branch's probabilities, the model version, the
latency of each stage and the modalities that were missing (no words recognised: ``text``; no
voiced frames: ``speech``; no token/frame overlap: ``graph``) -- an utterance always gets its event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from services.join import JoinService, Parts, feature_rows, utterance_parts
from shared.contracts import EmotionEvent, GraphFeatures, SpeechFeatures, Utterance
from shared.redaction import redact
from shared.runtime import Context
from shared.settings import Settings
from shared.triton_models import MoeFusionTensors as T


def missing_modalities(utterance: Utterance, speech: SpeechFeatures, graph: GraphFeatures) -> list[str]:
    missing = []
    if not utterance.text.strip():
        missing.append("text")
    if not speech.mask.to_array().any():
        missing.append("speech")
    if graph.edges == 0:
        missing.append("graph")
    return missing


def stage_latencies(parts: Parts, now: float) -> dict[str, float]:
    """Milliseconds spent in each stage, from the messages' creation times (one clock per host)."""
    u, t, s, g = (parts[k].created_at for k in ("utterance", "text", "speech", "graph"))
    ms = {
        "text": t - u,
        "speech": s - u,
        "graph": g - max(t, s),
        "fusion": now - max(t, s, g),
        "total": now - u,
    }
    return {k: round(1000 * max(0.0, v), 1) for k, v in ms.items()}


class MoeFusionService(JoinService):
    name = "moe_fusion"
    triton_model = "moe_fusion"

    def __init__(self, settings: Settings):
        t = settings.topics
        super().__init__(settings, {**utterance_parts(t), "graph": (t.graph_features, GraphFeatures)})
        self.output_topic = t.emotions
        self.redact_mode = settings.events.redact

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        params = self.model_parameters
        self.class_names = [c for c in params.get("class_names", "").split(",") if c]
        self.branches = [b for b in params.get("branches", "").split(",") if b in T.BRANCHES]
        if not self.class_names:
            raise RuntimeError("the moe_fusion model does not name its classes (class_names parameter)")
        ctx.metrics.event_latency.labels(self.name)  # the series exists before the first event

    def complete(self, joined: Sequence[Parts]) -> list[EmotionEvent]:
        graphs: list[GraphFeatures] = [j["graph"] for j in joined]  # type: ignore[misc]
        request = feature_rows(joined).moe_fusion_request(np.stack([g.embedding.to_array() for g in graphs]))
        out = self.model.infer(request, [T.PROBS.name, *(T.BRANCHES[b] for b in self.branches)])
        now = time.time()
        events = []
        for i, parts in enumerate(joined):
            u: Utterance = parts["utterance"]  # type: ignore[assignment]
            probs = out[T.PROBS.name][i]
            label = self.class_names[int(np.argmax(probs))]
            latency = stage_latencies(parts, now)
            events.append(
                EmotionEvent(
                    message_id=EmotionEvent.event_id(u.utterance_id, self.model_version),
                    call_id=u.call_id,
                    utterance_id=u.utterance_id,
                    speaker=u.speaker,
                    start=u.start,
                    end=u.end,
                    transcript=redact(u.text, self.redact_mode),
                    label=label,
                    probabilities={c: float(p) for c, p in zip(self.class_names, probs, strict=True)},
                    branches={
                        b: {c: float(p) for c, p in zip(self.class_names, out[T.BRANCHES[b]][i], strict=True)}
                        for b in self.branches
                    },
                    model_version=self.model_version,
                    missing_modalities=missing_modalities(u, parts["speech"], graphs[i]),  # type: ignore[arg-type]
                    latency_ms=latency,
                )
            )
            self.ctx.metrics.events.labels(self.name, label, u.speaker).inc()
            self.ctx.metrics.event_latency.labels(self.name).observe(latency["total"] / 1000)
        return events
