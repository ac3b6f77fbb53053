"""Speech recognition with word timestamps: faster-whisper on a CTranslate2 model of the bundle."""

from __future__ import annotations

from collections.abc import Sequence

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import SAMPLE_RATE
from .common import DEFAULT_THREADS, pick_device, resolve_for, settings_device

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

    from ..bundle import ResolvedModel

log = logging.getLogger("training.encoders")


@dataclass
class Word:
    text: str
    """The word as Whisper wrote it, without surrounding whitespace."""
    start: float
    end: float
    probability: float


@dataclass
class Segment:
    text: str
    start: float
    end: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    text: str
    language: str | None
    language_probability: float
    words: list[Word]
    segments: list[Segment]
    duration: float
    """Seconds of audio transcribed."""

    @classmethod
    def empty(cls, duration: float, language: str | None) -> Transcript:
        return cls(text="", language=language, language_probability=0.0, words=[], segments=[], duration=duration)


class Transcriber:
    """faster-whisper ``WhisperModel`` with word timestamps and guards against hallucinated text.

    Guards: audio shorter than ``min_seconds`` or quieter than ``silence_dbfs`` (RMS) returns an
    empty transcript without running the model; a segment is dropped when Whisper itself thinks
    it is no speech (``no_speech_prob > no_speech_threshold`` and ``avg_logprob < logprob_threshold``)
    or when its text is repetitive (``compression_ratio > compression_ratio_threshold``).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str,
        version: str,
        device: str | None = "auto",
        compute_type: str | None = None,
        cpu_threads: int = DEFAULT_THREADS,
        beam_size: int = 1,
        language: str | None = None,
        languages: Sequence[str] = (),
        english_only: bool = False,
        min_seconds: float = 0.1,
        silence_dbfs: float = -60.0,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        compression_ratio_threshold: float = 2.4,
    ) -> None:
        from faster_whisper import WhisperModel

        dev = pick_device(device)
        self.name = name
        self.version = version
        self.device = dev.type
        self.compute_type = compute_type or ("int8" if dev.type == "cpu" else "float16")
        self.beam_size = int(beam_size)
        self.english_only = english_only
        self.language = "en" if english_only else language
        self.languages = tuple(languages)
        """Candidates for language detection (empty: any language Whisper knows)."""
        self.min_seconds = min_seconds
        self.silence_dbfs = silence_dbfs
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.compression_ratio_threshold = compression_ratio_threshold
        self.model = WhisperModel(
            str(model_dir),
            device=dev.type,
            device_index=dev.index or 0,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            num_workers=1,
            local_files_only=True,
        )

    @classmethod
    def from_resolved(cls, resolved: ResolvedModel, **kwargs: object) -> Transcriber:
        kwargs.setdefault("english_only", bool(resolved.options.get("english_only", False)))
        return cls(resolved.path, name=resolved.name, version=resolved.version, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_bundle(
        cls,
        settings: Settings,
        name: str | None = None,
        device: str | None = None,
        compute_type: str | None = None,
        cpu_threads: int = DEFAULT_THREADS,
        beam_size: int = 1,
    ) -> Transcriber:
        """The configured (``settings.models.asr``) or named ASR model of the bundle."""
        return cls.from_resolved(
            resolve_for(settings, name, "asr"),
            device=settings_device(settings, device),
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            beam_size=beam_size,
            language=settings.models.language,
            languages=settings.models.languages,
        )

    @staticmethod
    def rms_dbfs(audio: np.ndarray) -> float:
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
        return 20.0 * np.log10(max(rms, 1e-10))

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono float32 ``audio``; ``language`` overrides the configured one.

        numpy's BLAS is held to one thread: faster-whisper's word alignment (DTW over the
        cross-attention) gives slightly different word times with other thread counts, and the
        time-aligned graph must be the same in training, in Triton and in-process.
        """
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return self._transcribe(audio, language)

    def _transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        duration = audio.size / SAMPLE_RATE
        lang = "en" if self.english_only else (language or self.language)
        if duration < self.min_seconds or self.rms_dbfs(audio) < self.silence_dbfs:
            return Transcript.empty(duration, lang)
        if lang is None and self.languages:
            lang = self.detect_language(audio)
        segments_iter, info = self.model.transcribe(
            audio,
            language=lang,
            beam_size=self.beam_size,
            best_of=1,
            temperature=0.0,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
            no_speech_threshold=self.no_speech_threshold,
            log_prob_threshold=self.logprob_threshold,
            compression_ratio_threshold=self.compression_ratio_threshold,
        )
        segments: list[Segment] = []
        for s in segments_iter:
            if s.no_speech_prob > self.no_speech_threshold and s.avg_logprob < self.logprob_threshold:
                log.debug("dropping segment judged as no speech: %r", s.text)
                continue
            if s.compression_ratio > self.compression_ratio_threshold:
                log.debug("dropping repetitive segment: %r", s.text)
                continue
            words = [
                Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                for w in (s.words or [])
                if w.word.strip()
            ]
            segments.append(
                Segment(
                    s.text.strip(),
                    float(s.start),
                    float(s.end),
                    float(s.avg_logprob),
                    float(s.no_speech_prob),
                    float(s.compression_ratio),
                    words,
                )
            )
        return Transcript(
            text=" ".join(s.text for s in segments if s.text),
            language=info.language,
            language_probability=float(info.language_probability),
            words=[w for s in segments for w in s.words],
            segments=segments,
            duration=duration,
        )

    def detect_language(self, audio: np.ndarray) -> str:
        """The most likely of the candidate ``languages`` for 16 kHz ``audio``."""
        _, _, probabilities = self.model.detect_language(audio)
        scores = dict(probabilities)
        return max(self.languages, key=lambda code: scores.get(code, 0.0))

    def __repr__(self) -> str:
        return f"Transcriber({self.version}, {self.device}/{self.compute_type}, beam={self.beam_size})"
