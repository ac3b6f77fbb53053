"""Speech encoding service: ``utterances`` -> ``features.speech``.

Each utterance's 16 kHz audio (from Redis under its ``audio_key``, else inline in the message)
goes through the ``speech_encoder`` Triton model: frames pooled or padded to ``max_frames``, their
mask and each frame's start/end time in seconds from the utterance start (for the time-aligned
graph).  Features are cached in Redis by (model version, audio bytes), so a replayed utterance
costs one look-up.  An utterance whose audio expired or is missing cannot be encoded: dead-lettered.

Each utterance also gets its speaker's baseline in the call (:class:`shared.contracts.SpeakerBaseline`):
the statistics of the same speaker's last ``models.speaker_window`` utterances before it, which this
service keeps in Redis per call and speaker (:class:`shared.state.SpeakerBaselines`); the fusion
model judges the voice against it (online per-speaker normalisation).

The audio under ``audio_key`` is the utterance's only copy, so it is read as state, not as a cache:
a Redis that does not answer (a timeout on a loaded host, a restart) fails the batch, which is
retried, where a cache would have answered "missing" and the utterance would have been lost.
"""

from __future__ import annotations

import json

import numpy as np

from services.triton_service import TritonService
from shared.cache import content_key
from shared.contracts import ArrayPayload, ContractError, SpeakerBaseline, SpeechFeatures, Utterance
from shared.runtime import Context, Reject
from shared.settings import Settings
from shared.speaker_norm import FrameStatistics
from shared.state import SpeakerBaselines
from shared.triton_models import SpeechEncoderTensors as T
from shared.triton_models import speech_encoder_request


def utterance_audio(utterance: Utterance, stored: bytes | None) -> np.ndarray:
    """The utterance's samples (int16 or float32) from Redis or inline; :class:`Reject` when gone."""
    if stored is not None:
        if len(stored) % 2:
            raise Reject(f"stored utterance audio has an odd number of bytes ({len(stored)}) for int16")
        return np.frombuffer(stored, "<i2")
    if utterance.audio is None:
        raise Reject("utterance audio missing or expired")
    try:
        audio = utterance.audio.to_array()
    except ContractError as exc:
        raise Reject(f"utterance audio undecodable: {exc.reason}") from exc
    if audio.dtype.kind not in ("i", "f") or audio.ndim != 1:
        raise Reject(f"utterance audio must be 1-D int16 or float32, got {audio.dtype} {list(audio.shape)}")
    return audio


def to_float(audio: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 in [-1, 1]; float audio passes through."""
    return audio.astype(np.float32) / 32768 if audio.dtype.kind == "i" else audio.astype(np.float32)


class SpeechEncoderService(TritonService):
    name = "speech_encoder"
    triton_model = "speech_encoder"
    input_contract = Utterance

    def __init__(self, settings: Settings):
        self.input_topic = settings.topics.utterances
        self.output_topic = settings.topics.speech_features
        self.speaker_window = settings.models.speaker_window
        self.speaker_ttl_s = settings.redis.speaker_ttl_s

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.baselines = SpeakerBaselines(ctx.state, self.name, self.speaker_window, self.speaker_ttl_s)

    def process(self, batch: list[Utterance]) -> list[list[SpeechFeatures] | Reject]:
        keys = [u.audio_key for u in batch if u.audio_key]
        with self.ctx.state.guard() as r:  # StateUnavailable: the batch is retried
            by_key = dict(zip(keys, r.mget(keys))) if keys else {}
        results: list[list[SpeechFeatures] | Reject | None] = [None] * len(batch)
        audio: dict[int, np.ndarray] = {}
        for i, u in enumerate(batch):
            try:
                a = utterance_audio(u, by_key.get(u.audio_key) if u.audio_key else None)
            except Reject as reject:
                results[i] = reject
                continue
            if a.size == 0:
                results[i] = Reject("utterance audio is empty")
                continue
            audio[i] = a
        keys = {i: content_key("speech", self.model_version, str(a.dtype), a.tobytes()) for i, a in audio.items()}
        cached = dict(zip(keys, self.ctx.cache.get_many(list(keys.values()))))
        misses = [i for i, v in cached.items() if v is None]
        self.ctx.metrics.cache.labels(self.name, "hit").inc(len(cached) - len(misses))
        self.ctx.metrics.cache.labels(self.name, "miss").inc(len(misses))
        features = {i: json.loads(v) for i, v in cached.items() if v is not None}
        if misses:
            features.update(self._encode(misses, audio, keys))
        baselines = self._baselines(batch, features)
        for i in audio:
            u = batch[i]
            results[i] = [
                SpeechFeatures(
                    call_id=u.call_id,
                    utterance_id=u.utterance_id,
                    model_version=self.model_version,
                    cached=cached[i] is not None,
                    speaker_baseline=baselines[i],
                    **features[i],
                )
            ]
        return results  # type: ignore[return-value]

    def _baselines(self, batch: list[Utterance], features: dict[int, dict]) -> dict[int, SpeakerBaseline]:
        """Each encoded utterance's speaker baseline; its own statistics are stored for the next ones."""
        rows = sorted(features)
        frames = {i: ArrayPayload.model_validate(features[i]["frames"]).to_array() for i in rows}
        masks = {i: ArrayPayload.model_validate(features[i]["mask"]).to_array() for i in rows}
        items = [
            (batch[i].call_id, batch[i].speaker, batch[i].index, FrameStatistics.of_utterance(frames[i], masks[i]))
            for i in rows
        ]
        dim = next(iter(frames.values())).shape[-1] if rows else 0
        before = self.baselines.record(items, dim)  # StateUnavailable: the batch is retried
        out = {}
        for i, stats in zip(rows, before):
            mean, var = stats.mean_var()
            out[i] = SpeakerBaseline(
                utterances=stats.utterances,
                mean=ArrayPayload.from_array(mean, "float32"),
                var=ArrayPayload.from_array(var, "float32"),
            )
        return out

    def _encode(self, rows: list[int], audio: dict[int, np.ndarray], keys: dict[int, str]) -> dict[int, dict]:
        """One Triton request for the uncached utterances; caches and returns their features."""
        request = speech_encoder_request([to_float(audio[i]) for i in rows])
        out = self.model.infer(request, [T.FRAMES.name, T.MASK.name, T.FRAME_TIMES.name])
        fresh = {}
        for r, i in enumerate(rows):
            fresh[i] = {
                "frames": ArrayPayload.from_array(out[T.FRAMES.name][r], "float16").model_dump(),
                "mask": ArrayPayload.from_array(out[T.MASK.name][r], "bool").model_dump(),
                "frame_times": ArrayPayload.from_array(out[T.FRAME_TIMES.name][r], "float32").model_dump(),
            }
        self.ctx.cache.put_many([(keys[i], json.dumps(f).encode()) for i, f in fresh.items()])
        return fresh
