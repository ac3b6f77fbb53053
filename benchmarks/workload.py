"""The benchmark's audio: generated stereo agent/customer calls (8 kHz, English and Korean).

The calls are generated once per run (:func:`training.data.calls.generate_calls`, fixed seed) and
every section uses the same ones: the end-to-end runs stream the first N of them (under new call
ids each run: the ASR service refuses audio after a call has ended), the ceilings transcribe the
same calls' utterances.  :meth:`Workload.segments` cuts them as the ASR service does (the same
:class:`services.segmentation.ChannelSegmenter`, fed the same 200 ms chunks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion.publish import CallAudio, chunk_frames, load_call
from services.segmentation import ChannelSegmenter, Segment
from shared.settings import SegmentationSettings
from training.data.calls import CallSpec, generate_calls

CHUNK_MS = 200.0
"""The chunk length ``emotion publish`` sends (and the ASR service receives)."""


@dataclass(frozen=True)
class CallSegment:
    """One utterance of a workload call, as the ASR service would cut it."""

    call_id: str
    speaker: str
    language: str
    segment: Segment

    @property
    def audio(self) -> np.ndarray:
        """16 kHz float32 in [-1, 1] (what the ``asr`` and ``speech_encoder`` models take)."""
        return self.segment.audio.astype(np.float32) / 32768


@dataclass
class Workload:
    calls: list[CallSpec]

    @classmethod
    def generate(cls, out_dir: Path, n_calls: int, seed: int, turns: tuple[int, int]) -> Workload:
        return cls(
            generate_calls(out_dir, n_calls, seed=seed, utterances_per_call=turns, call_prefix="bench", progress=False)
        )

    def audio(self, n: int, tag: str) -> list[CallAudio]:
        """The first ``n`` calls, ready to publish, with call ids unique to ``tag``."""
        out = []
        for spec in self.calls[:n]:
            call = load_call(spec.path, call_id=spec.call_id, language=spec.language)
            out.append(dataclasses.replace(call, call_id=f"{spec.call_id}-{tag}"))
        return out

    def audio_seconds(self, n: int) -> float:
        return sum(c.duration for c in self.calls[:n])

    def segments(self, n: int, settings: SegmentationSettings) -> list[CallSegment]:
        """The utterances of the first ``n`` calls, in call order then time."""
        return [s for spec in self.calls[:n] for s in segment_call(spec, settings)]


def segment_call(spec: CallSpec, settings: SegmentationSettings) -> list[CallSegment]:
    """One call's utterances: each channel through its own segmenter in 200 ms chunks, then the end of call."""
    call = load_call(spec.path, call_id=spec.call_id, language=spec.language)
    samples = call.pcm.astype(np.float32) / 32768
    step = chunk_frames(call.sample_rate, CHUNK_MS)
    out = []
    for ch, role in enumerate(call.channel_roles):
        segmenter = ChannelSegmenter(settings, call.sample_rate)
        found: list[Segment] = []
        for lo in range(0, samples.shape[0], step):
            found += segmenter.feed(samples[lo : lo + step, ch])
        found += segmenter.flush()
        out += [CallSegment(spec.call_id, role, spec.language, s) for s in found]
    return sorted(out, key=lambda s: s.segment.start)
