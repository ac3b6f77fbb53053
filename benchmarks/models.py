"""Each served model through Triton against the same model code in this process.

The in-process side is the very ``TritonPythonModel`` Triton runs (``training.serving.<model>``),
initialised here with the configuration Triton holds for it (``get_model_config``) and the
version folder it serves, and called with the same inputs: the difference is what Triton costs
(gRPC, (de)serialisation, the scheduler), not a different model.

Inputs are real: the utterances of an end-to-end run (audio read back from Redis, transcripts and
word times as the ASR service published them), their text and speech features and graph
embeddings computed once through Triton.

* :func:`latency_table`: median wall time of one request of ``batch`` utterances, both ways, at
  batch 1, 8 and 32 (the ``asr`` model's largest batch is 8: Whisper decodes rows one by one);
* :func:`batching_gain`: utterances per second with ``concurrency`` single-utterance requests in
  flight against one at a time; Triton's dynamic batcher merges them (the rows per execution,
  from Triton's statistics, show it did); for ``asr`` (no dynamic batching) the gain is its
  instances decoding in parallel.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.pipeline import triton_delta, triton_statistics
from services.graph_gat import word_spans
from shared.contracts import Utterance
from shared.settings import Settings
from shared.triton_client import TritonModel
from shared.triton_models import (
    TRITON_MODELS,
    AsrTensors,
    FeatureRows,
    GraphGatTensors,
    MoeFusionTensors,
    SpeechEncoderTensors,
    TextEncoderTensors,
    asr_request,
    speech_encoder_request,
    text_encoder_request,
)
from training.serving.repository import versions

log = logging.getLogger(__name__)

MODELS = tuple(TRITON_MODELS)
OUTPUTS = {
    "asr": [AsrTensors.TEXT.name, AsrTensors.DETECTED_LANGUAGE.name, AsrTensors.WORDS.name],
    "text_encoder": list(TextEncoderTensors.output_names()),
    "speech_encoder": [
        SpeechEncoderTensors.FRAMES.name,
        SpeechEncoderTensors.MASK.name,
        SpeechEncoderTensors.FRAME_TIMES.name,
    ],
    "graph_gat": list(GraphGatTensors.output_names()),
    "moe_fusion": [MoeFusionTensors.PROBS.name, *MoeFusionTensors.BRANCHES.values()],
}
"""What the benchmark asks each model for: what the services ask for."""


@dataclass
class Samples:
    """Real utterances and, row for row, their features: the inputs of every model."""

    utterances: list[Utterance]
    audio: list[np.ndarray]
    text: dict[str, np.ndarray]
    speech: dict[str, np.ndarray]
    graph: np.ndarray

    def __len__(self) -> int:
        return len(self.utterances)

    def inputs(self, model: str, rows: slice) -> dict[str, np.ndarray]:
        us = self.utterances[rows]
        if model == "asr":
            return asr_request(self.audio[rows], [u.language or "" for u in us])
        if model == "text_encoder":
            return text_encoder_request([u.text for u in us])
        if model == "speech_encoder":
            return speech_encoder_request(self.audio[rows])
        t, s = self.text, self.speech
        features = FeatureRows(
            text_hidden=t[TextEncoderTensors.HIDDEN.name][rows],
            text_mask=t[TextEncoderTensors.MASK.name][rows],
            token_offsets=t[TextEncoderTensors.OFFSETS.name][rows],
            speech_frames=s[SpeechEncoderTensors.FRAMES.name][rows],
            speech_mask=s[SpeechEncoderTensors.MASK.name][rows],
            frame_times=s[SpeechEncoderTensors.FRAME_TIMES.name][rows],
        )
        if model == "graph_gat":
            return features.graph_gat_request(word_spans(us))
        return features.moe_fusion_request(self.graph[rows])


def collect_samples(settings: Settings, utterances: list[Utterance], n: int) -> Samples:
    """``n`` utterances with text and audio (audio from Redis or inline) and their features."""
    from shared.cache import FeatureCache

    cache = FeatureCache(settings)
    chosen, audio = [], []
    for u in sorted(utterances, key=lambda u: u.utterance_id):
        raw = cache.get(u.audio_key) if u.audio_key else None
        pcm = np.frombuffer(raw, "<i2") if raw is not None else (u.audio.to_array() if u.audio is not None else None)
        if pcm is None or not u.text.strip():
            continue
        chosen.append(u)
        audio.append(pcm.astype(np.float32) / 32768)
        if len(chosen) == n:
            break
    if not chosen:
        raise RuntimeError("no utterance with text and audio for the model benchmark")
    if len(chosen) < n:
        log.info("model benchmark: %d utterances with text, each used %d times", len(chosen), -(-n // len(chosen)))
        chosen, audio = [chosen[i % len(chosen)] for i in range(n)], [audio[i % len(audio)] for i in range(n)]
    samples = Samples(chosen, audio, {}, {}, np.zeros(0))
    every = slice(0, n)
    samples.text = TritonModel(settings, "text_encoder").infer(
        samples.inputs("text_encoder", every), OUTPUTS["text_encoder"]
    )
    samples.speech = TritonModel(settings, "speech_encoder").infer(
        samples.inputs("speech_encoder", every), OUTPUTS["speech_encoder"]
    )
    graph = GraphGatTensors.GRAPH.name
    samples.graph = TritonModel(settings, "graph_gat").infer(samples.inputs("graph_gat", every), [graph])[graph]
    return samples


def load_in_process(settings: Settings, name: str, device: str = "cpu"):
    """The ``TritonPythonModel`` Triton serves as ``name``, initialised in this process."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=settings.triton.grpc_url)
    try:
        config = client.get_model_config(name, as_json=True)["config"]
    finally:
        client.close()
    folder = settings.model_repository / name
    model = importlib.import_module(f"training.serving.{name}").TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(folder),
            "model_version": str(versions(folder)[-1]),
            "model_instance_kind": "GPU" if device.startswith("cuda") else "CPU",
            "model_instance_device_id": "0",
        }
    )
    return model


def _median_s(fn: Callable[[], object], min_repeats: int, budget_s: float) -> tuple[float, int]:
    """Median wall time of ``fn`` after one warm-up call: at least ``min_repeats`` calls, more
    while within ``budget_s`` (at most 30)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget_s and len(times) < 30):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def _disagreement(via_triton: dict[str, np.ndarray], in_process: dict[str, np.ndarray]) -> float:
    """The largest difference between the numeric outputs of one request both ways, relative to
    the largest magnitude of that output in process (0: the same numbers)."""
    worst = 0.0
    for name, ours in in_process.items():
        ours = np.asarray(ours)
        if name not in via_triton or ours.dtype.kind not in "biuf":
            continue
        theirs = np.asarray(via_triton[name]).astype(np.float64).reshape(ours.shape)
        scale = max(float(np.abs(ours).max(initial=0.0)), 1e-6)
        worst = max(worst, float(np.abs(theirs - ours.astype(np.float64)).max(initial=0.0)) / scale)
    return worst


def latency_table(
    settings: Settings, samples: Samples, batches: dict[str, tuple[int, ...]], budget_s: float, device: str = "cpu"
) -> list[dict]:
    """Per model and batch: ms per request and per utterance, through Triton and in-process, and how
    far apart the two answers to the same request are (``max_rel_diff``)."""
    rows = []
    for name in MODELS:
        served = TritonModel(settings, name)
        local = load_in_process(settings, name, device)
        for b in batches[name]:
            inputs = samples.inputs(name, slice(0, b))
            min_repeats = 1 if name == "asr" and b > 1 else 3
            via_triton, n_t = _median_s(lambda: served.infer(inputs, OUTPUTS[name]), min_repeats, budget_s)
            in_process, n_l = _median_s(lambda: local.infer([inputs]), min_repeats, budget_s)
            diff = _disagreement(served.infer(inputs, OUTPUTS[name]), local.infer([inputs])[0])
            rows.append(
                {
                    "model": name,
                    "batch": b,
                    "repeats": min(n_t, n_l),
                    "triton_ms": round(1000 * via_triton, 2),
                    "in_process_ms": round(1000 * in_process, 2),
                    "triton_ms_per_utterance": round(1000 * via_triton / b, 3),
                    "in_process_ms_per_utterance": round(1000 * in_process / b, 3),
                    "overhead_ms": round(1000 * (via_triton - in_process), 2),
                    "triton_vs_in_process": round(via_triton / in_process, 3),
                    "max_rel_diff": round(diff, 6),
                }
            )
            log.info(
                "model %s batch %d: triton %.1f ms, in-process %.1f ms", name, b, 1000 * via_triton, 1000 * in_process
            )
        served.close()
        local.finalize()
        local = None  # released before the next model loads
        gc.collect()
    return rows


def batching_gain(settings: Settings, samples: Samples, concurrency: dict[str, int], budget_s: float) -> list[dict]:
    """Per model: utterances/s with ``concurrency[model]`` single-utterance requests in flight
    against one request at a time, and the rows Triton put in each execution."""
    rows = []
    for name in MODELS:
        served = TritonModel(settings, name)
        result = {"model": name}
        for label, c in (("sequential", 1), ("concurrent", concurrency[name])):
            requests = [samples.inputs(name, slice(i % len(samples), i % len(samples) + 1)) for i in range(c)]
            served.infer_many(requests, OUTPUTS[name])  # warm
            before, done, t0 = triton_statistics(settings), 0, time.perf_counter()
            while done == 0 or time.perf_counter() - t0 < budget_s:
                served.infer_many(requests, OUTPUTS[name])
                done += c
            wall = time.perf_counter() - t0
            stats = triton_delta(before, triton_statistics(settings)).get(name, {})
            result[label] = {
                "concurrency": c,
                "utterances": done,
                "utterances_per_s": round(done / wall, 2),
                "rows_per_execution": stats.get("rows_per_execution"),
            }
        result["gain"] = round(result["concurrent"]["utterances_per_s"] / result["sequential"]["utterances_per_s"], 3)
        log.info(
            "model %s: %.1f -> %.1f utterances/s with %d in flight (x%.2f, %.1f rows per execution)",
            name,
            result["sequential"]["utterances_per_s"],
            result["concurrent"]["utterances_per_s"],
            concurrency[name],
            result["gain"],
            result["concurrent"]["rows_per_execution"] or 0,
        )
        served.close()
        rows.append(result)
    return rows
