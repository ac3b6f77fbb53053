"""Streaming voice-activity segmentation of one channel of a call into utterance segments.

A call's channel arrives as chunks of PCM at the telephony rate (8 kHz) or 16 kHz.  A
:class:`ChannelSegmenter` turns that stream, chunk by chunk, into :class:`Segment` s of 16 kHz
int16 audio, each one stretch of speech:

1. :class:`~shared.audio.StreamResampler` resamples to 16 kHz with the polyphase filter of
   :func:`shared.audio.resample`, holding back the few input samples the filter still needs,
   so chunked resampling gives exactly the samples of one resampling of the whole stream;
2. the Silero VAD that ships inside faster-whisper (ONNX, fully offline) scores every 32 ms window
   (512 samples); its recurrent state and the previous window's last 64 samples are carried from
   chunk to chunk, so the scores do not depend on how the stream was chunked; a window louder
   than ``loud_dbfs`` that Silero scores at least ``loud_vad_floor`` counts as speech (Silero is
   unsure of telephone-band, codec-distorted and synthetic voices; line noise is far quieter);
3. a small state machine over the scores: speech starts at a window scoring at least
   ``vad_threshold``; a segment is complete once ``min_silence_s`` of non-speech follows it (a
   window below ``vad_threshold - 0.15`` starts the silence, one above ``vad_threshold`` ends it);
   speech longer than ``max_utterance_s`` is split at its last pause of at least 0.1 s or, without
   one, cut hard; segments get ``speech_pad_s`` of audio on each side (never overlapping the
   previous segment); speech shorter than ``min_utterance_s`` is dropped.

Only the not-yet-segmented tail of the channel is kept.  The whole state (:meth:`ChannelSegmenter.state`)
is a few scalars plus the tail, so the ASR service stores it in Redis between chunks and a restarted
instance carries on where the last one stopped: incremental and one-shot segmentation agree to
the sample.  :meth:`ChannelSegmenter.flush` ends the stream (end of call, silence timeout) and
starts a fresh one at the same position in the call.

Positions are sample indices at 16 kHz from the start of the call (:data:`SAMPLE_RATE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from shared.audio import SAMPLE_RATE, StreamResampler
from shared.settings import SegmentationSettings

WINDOW = 512
"""Samples per Silero VAD window (32 ms)."""
CONTEXT = 64
"""Samples of the previous window the VAD sees with each window."""
STATE_SIZE = 128
NEG_THRESHOLD_OFFSET = 0.15
"""A window scoring below ``vad_threshold`` minus this is silence (Silero's hysteresis)."""
SPLIT_PAUSE = int(0.1 * SAMPLE_RATE)
"""The shortest pause at which a too-long utterance is split."""


@dataclass
class Segment:
    """One utterance's audio on one channel: 16 kHz int16, positions in samples from the call start."""

    start: int
    end: int
    audio: np.ndarray
    voiced: list[tuple[int, int]]
    """Spans of windows the VAD scored as speech, in samples from the call start."""
    forced: bool = False
    """Cut at ``max_utterance_s`` in the middle of speech."""

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE

    def voiced_s(self) -> list[tuple[float, float]]:
        """The voiced spans in seconds from the segment start (the time base of its words)."""
        return [((a - self.start) / SAMPLE_RATE, (b - self.start) / SAMPLE_RATE) for a, b in self.voiced]


@dataclass
class _Speech:
    """The segment in progress: where its speech started, its pause (if any) and voiced spans."""

    start: int
    voiced: list[list[int]] = field(default_factory=list)
    silence_start: int | None = None
    pause: tuple[int, int] | None = None
    """The last pause of at least :data:`SPLIT_PAUSE` inside the speech: (silence start, resume)."""


class ChannelSegmenter:
    """Segments one channel's stream; see the module docstring.  State in, state out."""

    def __init__(self, settings: SegmentationSettings, sample_rate: int):
        self.settings = settings
        self.sample_rate = int(sample_rate)
        self.resampler = StreamResampler(sample_rate)
        self.tail = np.zeros(0, np.int16)
        self.tail_start = 0
        self.processed = 0
        """Position up to which the VAD has scored the audio."""
        self.emitted_end = 0
        """End of the last segment emitted: the next one's padding never reaches back before it."""
        self.vad_state = np.zeros(2 * STATE_SIZE + CONTEXT, np.float32)
        """Silero's h and c, then the last 64 samples scored."""
        self.speech: _Speech | None = None
        self._pad = int(round(settings.speech_pad_s * SAMPLE_RATE))
        self._min_silence = int(round(settings.min_silence_s * SAMPLE_RATE))
        self._min_speech = int(round(settings.min_utterance_s * SAMPLE_RATE))
        self._max_speech = max(WINDOW, int(round(settings.max_utterance_s * SAMPLE_RATE)) - 2 * self._pad)
        self._neg_threshold = max(settings.vad_threshold - NEG_THRESHOLD_OFFSET, 0.01)

    # ---- the stream ------------------------------------------------------------------------
    @property
    def tail_end(self) -> int:
        return self.tail_start + self.tail.size

    def feed(self, samples: np.ndarray) -> list[Segment]:
        """Mono float32 samples in [-1, 1] at ``sample_rate`` -> the segments they complete."""
        self._append(self.resampler.feed(samples))
        usable = (self.tail_end - self.processed) // WINDOW * WINDOW
        segments = self._score(self.processed + usable)
        self._trim()
        return segments

    def flush(self) -> list[Segment]:
        """End the stream: every segment left, then a fresh stream at the same position."""
        self._append(self.resampler.flush())
        segments = self._score(self.tail_end)
        if self.speech is not None:
            end = self.speech.silence_start if self.speech.silence_start is not None else self.tail_end
            self._complete(segments, self.speech, min(end, self.tail_end), cap=self.tail_end)
        position = self.tail_end
        self.resampler = StreamResampler(self.sample_rate)
        self.tail_start = self.processed = self.emitted_end = position
        self.tail = np.zeros(0, np.int16)
        self.vad_state = np.zeros_like(self.vad_state)
        self.speech = None
        return segments

    def _append(self, audio: np.ndarray) -> None:
        if audio.size:
            pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
            self.tail = np.concatenate([self.tail, pcm])

    def _trim(self) -> None:
        """Drop audio no future segment can reach (its padding included)."""
        keep = (self.speech.start if self.speech is not None else self.processed) - self._pad
        keep = min(max(keep, self.emitted_end, self.tail_start), self.tail_end)
        self.tail = self.tail[keep - self.tail_start :]
        self.tail_start = keep

    # ---- VAD -------------------------------------------------------------------------------
    def _probabilities(self, stop: int) -> np.ndarray:
        """Scores of the windows from ``processed`` to ``stop`` (the last one zero-padded)."""
        from faster_whisper.vad import get_vad_model

        audio = self.tail[self.processed - self.tail_start : stop - self.tail_start].astype(np.float32) / 32768
        n = -(-audio.size // WINDOW)
        if n == 0:
            return np.zeros(0, np.float32)
        windows = np.zeros((n, WINDOW), np.float32)
        windows.reshape(-1)[: audio.size] = audio
        context = np.concatenate([self.vad_state[None, 2 * STATE_SIZE :], windows[:-1, -CONTEXT:]])
        h = self.vad_state[:STATE_SIZE].reshape(1, 1, STATE_SIZE)
        c = self.vad_state[STATE_SIZE : 2 * STATE_SIZE].reshape(1, 1, STATE_SIZE)
        inputs = {"input": np.concatenate([context, windows], 1), "h": h, "c": c}
        probs, h, c = get_vad_model().session.run(None, inputs)
        self.vad_state = np.concatenate([h.reshape(-1), c.reshape(-1), windows[-1, -CONTEXT:]]).astype(np.float32)
        probs = np.asarray(probs, np.float32).reshape(-1)
        # loud windows Silero is unsure of (telephone band, codecs, synthetic voices) are speech
        level = 10 * np.log10(np.mean(np.square(windows, dtype=np.float64), axis=1) + 1e-12)
        loud = (level >= self.settings.loud_dbfs) & (probs >= self.settings.loud_vad_floor)
        return np.where(loud, np.maximum(probs, self.settings.vad_threshold), probs)

    def _score(self, stop: int) -> list[Segment]:
        segments: list[Segment] = []
        s = self.settings
        for k, p in enumerate(self._probabilities(stop)):
            w0 = self.processed + k * WINDOW
            w1 = w0 + WINDOW
            speech = self.speech
            if speech is None:
                if p >= s.vad_threshold:
                    self.speech = _Speech(start=w0, voiced=[[w0, w1]])
                continue
            if p >= s.vad_threshold:
                if speech.silence_start is not None and w0 - speech.silence_start >= SPLIT_PAUSE:
                    speech.pause = (speech.silence_start, w0)
                speech.silence_start = None
                if speech.voiced and speech.voiced[-1][1] == w0:
                    speech.voiced[-1][1] = w1
                else:
                    speech.voiced.append([w0, w1])
            elif p < self._neg_threshold and speech.silence_start is None:
                speech.silence_start = w0
            if speech.silence_start is not None and w1 - speech.silence_start >= self._min_silence:
                self._complete(segments, speech, speech.silence_start, cap=w1)
                self.speech = None
            elif w1 - speech.start > self._max_speech:
                self.speech = self._split(segments, speech, w1)
        self.processed = max(self.processed, min(stop, self.tail_end))
        return segments

    def _split(self, segments: list[Segment], speech: _Speech, w1: int) -> _Speech | None:
        """Speech reached the maximum length at ``w1``: end the segment, return what continues."""
        if speech.silence_start is not None and w1 - speech.silence_start >= SPLIT_PAUSE:
            self._complete(segments, speech, speech.silence_start, cap=w1)
            return None
        if speech.pause is not None:
            pause_start, resume = speech.pause
            self._complete(segments, speech, pause_start, cap=(pause_start + resume) // 2)
            rest = [[max(a, resume), b] for a, b in speech.voiced if b > resume]
            return _Speech(start=resume, voiced=rest, silence_start=speech.silence_start)
        self._complete(segments, speech, w1, cap=w1, forced=True)
        return _Speech(start=w1)

    def _complete(self, segments: list[Segment], speech: _Speech, end: int, cap: int, forced: bool = False) -> None:
        """Emit the speech ``[speech.start, end)`` padded, unless it is too short."""
        if end - speech.start < self._min_speech:
            return
        start = max(speech.start - self._pad, self.emitted_end, self.tail_start)
        stop = min(end + self._pad, cap, self.tail_end)
        voiced = [(max(a, speech.start), min(b, end)) for a, b in speech.voiced if a < end and b > speech.start]
        audio = self.tail[start - self.tail_start : stop - self.tail_start].copy()
        segments.append(Segment(start=start, end=stop, audio=audio, voiced=voiced, forced=forced))
        self.emitted_end = stop

    # ---- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, bytes]:
        """Everything needed to carry on later: scalars as JSON, the tail and filters as bytes."""
        sp = self.speech
        meta = {
            "sample_rate": self.sample_rate,
            "tail_start": self.tail_start,
            "processed": self.processed,
            "emitted_end": self.emitted_end,
            "resampler": [self.resampler.seen, self.resampler.emitted],
            "speech": None if sp is None else [sp.start, sp.voiced, sp.silence_start, sp.pause],
        }
        return {
            "meta": json.dumps(meta).encode(),
            "tail": self.tail.astype("<i2").tobytes(),
            "carry": self.resampler.carry.astype("<f4").tobytes(),
            "vad": self.vad_state.astype("<f4").tobytes(),
        }

    @classmethod
    def from_state(cls, settings: SegmentationSettings, state: dict[str, bytes]) -> ChannelSegmenter:
        meta = json.loads(state["meta"])
        seg = cls(settings, meta["sample_rate"])
        seen, emitted = meta["resampler"]
        seg.resampler = StreamResampler(meta["sample_rate"], np.frombuffer(state["carry"], "<f4").copy(), seen, emitted)
        seg.tail_start = meta["tail_start"]
        seg.processed, seg.emitted_end = meta["processed"], meta["emitted_end"]
        seg.tail = np.frombuffer(state["tail"], "<i2").astype(np.int16)
        seg.vad_state = np.frombuffer(state["vad"], "<f4").astype(np.float32)
        if meta["speech"] is not None:
            start, voiced, silence_start, pause = meta["speech"]
            seg.speech = _Speech(start, voiced, silence_start, tuple(pause) if pause else None)
        return seg
