"""Speech recognition with word timestamps: faster-whisper on a CTranslate2 model of the bundle.

**Encoder windows shorter than 30 s** (``window_s``, ``models.asr_window_s``). faster-whisper
pads every utterance's log-mel to Whisper's 30 s window, and on CPU the encoder on 30 s is most of
the cost of a short utterance: 0.75 s for whisper-base int8 on 2 cores, against 0.11 s on 10 s.
CTranslate2's encoder takes any length up to 30 s, so :func:`encoder_window` cuts the padded
log-mel to the audio heard plus at least a second, rounded up to 5 s and never under ``window_s``,
and fills the padding left with the log-mel of silence: the floor of the clip's own log-mel, which
is what Whisper saw after short clips in training (faster-whisper pads with zeros, a faint noise to
the model, which then invents words in it when the window is short). With ``window_s`` = 10
Whisper is 2.3x faster on real telephony prompts at a word error rate no worse (0.0482 against
0.0499) and 2.1x faster on the benchmark's calls (docs/benchmarks.md); under 10 s it invents words
again. Language detection keeps the 30 s window (:func:`_whisper_model`).
"""

from __future__ import annotations

from collections.abc import Sequence

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import SAMPLE_RATE
from .common import DEFAULT_THREADS, ctranslate2_device, resolve_for, settings_device

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

    from ..model_store.resolve import ResolvedModel
    from .packing import PackingOptions

log = logging.getLogger("training.encoders")

WHISPER_WINDOW_S = 30.0
"""Whisper's own window: the log-mel faster-whisper hands the encoder is always this long."""
MEL_FRAMES_PER_S = 100
"""Whisper's log-mel hop: 10 ms."""
_HEARD_MARGIN_S = 1.0
_WINDOW_STEP_S = 5.0
_SILENCE_BELOW_PEAK = 2.0
"""Whisper's log-mel floors every value 8 decades (2.0 after its scaling) below the clip's peak:
zero audio -- Whisper's padding -- sits at that floor."""


def encoder_window(features: np.ndarray, window_s: float) -> np.ndarray:
    """The log-mel ``[B, mels, frames]`` faster-whisper padded to 30 s with zeros, cut to the
    window the encoder needs: the frames heard (up to the last non-zero one) plus
    ``_HEARD_MARGIN_S``, rounded up to ``_WINDOW_STEP_S``, at least ``window_s``, at most as given.
    The padding left is filled per row with the log-mel of silence (its peak minus 2.0). Returns
    the features unchanged when ``window_s`` is Whisper's own 30 s or more."""
    total = features.shape[-1]
    if window_s >= WHISPER_WINDOW_S or total == 0:
        return features
    rows = features.reshape(-1, features.shape[-2], total)
    heard = [int(nz[-1]) + 1 if (nz := np.flatnonzero(np.any(row != 0.0, axis=0))).size else 0 for row in rows]
    step = int(_WINDOW_STEP_S * MEL_FRAMES_PER_S)
    wanted = -(-(max(heard) + int(_HEARD_MARGIN_S * MEL_FRAMES_PER_S)) // step) * step
    length = min(total, max(int(window_s * MEL_FRAMES_PER_S), wanted))
    window = np.array(rows[..., :length], dtype=np.float32, copy=True)
    for row, n in zip(window, heard, strict=True):
        if 0 < n < length:
            row[:, n:] = row[:, :n].max() - _SILENCE_BELOW_PEAK
    return window.reshape(*features.shape[:-1], length)


def _whisper_model(window_s: float):
    """faster-whisper's ``WhisperModel``, its encoder fed :func:`encoder_window` when it decodes
    (the class itself when ``window_s`` is Whisper's own window). Language detection keeps the 30 s
    window: it runs once per call until the call's language is known, and on the short window it
    named another language for 4 of 118 English telephony prompts, against 1 on 30 s."""
    from faster_whisper import WhisperModel

    if window_s >= WHISPER_WINDOW_S:
        return WhisperModel

    class ShortWindowWhisper(WhisperModel):
        detecting = False

        def encode(self, features: np.ndarray):
            if self.detecting:
                return super().encode(features)
            return super().encode(encoder_window(features if features.ndim == 3 else features[None], window_s))

        def detect_language(self, *args, **kwargs):
            self.detecting = True
            try:
                return super().detect_language(*args, **kwargs)
            finally:
                self.detecting = False

    return ShortWindowWhisper


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
    window: int = 1
    """Utterances that shared the Whisper window this one was decoded in (packing); 0: not decoded."""

    @classmethod
    def empty(cls, duration: float, language: str | None) -> Transcript:
        return cls(
            text="", language=language, language_probability=0.0, words=[], segments=[], duration=duration, window=0
        )


NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
"""Languages written without spaces between words (faster-whisper splits their words by Unicode)."""


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: UTF-8 bytes over zlib-compressed bytes (0 for no text)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _join_words(words: Sequence[Word], language: str | None) -> str:
    """An utterance's text from its words (packed windows: the window's text is not the utterance's)."""
    return ("" if language in NO_SPACE_LANGUAGES else " ").join(w.text for w in words)


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
        window_s: float = WHISPER_WINDOW_S,
    ) -> None:
        if not 0 < window_s:
            raise ValueError(f"window_s={window_s} must be positive")
        kind, index = ctranslate2_device(device)
        self.name = name
        self.version = version
        self.device = kind
        self.compute_type = compute_type or ("int8" if kind == "cpu" else "float16")
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
        self.window_s = min(float(window_s), WHISPER_WINDOW_S)
        """Shortest encoder window (:func:`encoder_window`); 30: faster-whisper's own."""
        self.model = _whisper_model(self.window_s)(
            str(model_dir),
            device=kind,
            device_index=index,
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
        window_s: float | None = None,
    ) -> Transcriber:
        """The configured (``settings.models.asr``) or named ASR model of the bundle, its encoder
        window ``window_s`` or else ``settings.models.asr_window_s``."""
        return cls.from_resolved(
            resolve_for(settings, name, "asr"),
            device=settings_device(settings, device),
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            beam_size=beam_size,
            language=settings.models.language,
            languages=settings.models.languages,
            window_s=settings.models.asr_window_s if window_s is None else window_s,
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

    def transcribe_many(
        self,
        audios: Sequence[np.ndarray],
        languages: Sequence[str | None] | None = None,
        packing: PackingOptions | None = None,
    ) -> list[Transcript]:
        """Transcripts of several utterances (16 kHz mono float32), in their order.

        ``packing`` None: one after another, as :meth:`transcribe`. Otherwise utterances of one
        language share Whisper windows (:mod:`training.encoders.packing`): each window is decoded
        once and every word goes back to its utterance, on the utterance's own clock. The silence
        and length guards still judge each utterance alone, before packing; an utterance whose
        language is unknown is detected alone first; a lone utterance is transcribed exactly as
        :meth:`transcribe` would.
        """
        from threadpoolctl import threadpool_limits

        languages = list(languages) if languages is not None else [None] * len(audios)
        if len(languages) != len(audios):
            raise ValueError(f"{len(languages)} languages for {len(audios)} utterances")
        with threadpool_limits(limits=1):
            if packing is None:
                return [self._transcribe(a, lang) for a, lang in zip(audios, languages, strict=True)]
            return self._transcribe_packed(audios, languages, packing)

    def _transcribe_packed(
        self, audios: Sequence[np.ndarray], languages: Sequence[str | None], packing: PackingOptions
    ) -> list[Transcript]:
        from .packing import assemble, plan_windows, split_words

        results: list[Transcript | None] = [None] * len(audios)
        rows: list[int] = []
        clips: list[np.ndarray] = []
        langs: list[str | None] = []
        for i, (audio, language) in enumerate(zip(audios, languages, strict=True)):
            clip = self._clip(audio)
            lang = self._language(language)
            if self._too_quiet_or_short(clip):
                results[i] = Transcript.empty(clip.size / SAMPLE_RATE, lang)
                continue
            rows.append(i)
            clips.append(clip)
            langs.append(lang if lang is not None else self.detect_language(clip))
        for window in plan_windows([c.size / SAMPLE_RATE for c in clips], langs, packing):
            if len(window.rows) == 1:
                (k,) = window.rows
                results[rows[k]] = self._transcribe(clips[k], langs[k])
                continue
            segments, info = self._decode(assemble(window, clips), window.language, repetition_guard=False)
            per_row: list[list[Segment]] = [[] for _ in window.rows]
            for segment in segments:
                for n, words in enumerate(split_words(segment.words, window, packing.slack_s)):
                    if words:
                        text = _join_words(words, info.language)
                        per_row[n].append(
                            Segment(
                                text,
                                words[0].start,
                                words[-1].end,
                                segment.avg_logprob,
                                segment.no_speech_prob,
                                segment.compression_ratio,
                                words,
                            )
                        )
            for n, k in enumerate(window.rows):
                words = [w for s in per_row[n] for w in s.words]
                text = _join_words(words, info.language)
                if not words or compression_ratio(text) > self.compression_ratio_threshold:
                    # Whisper may stop decoding a window early -- after a sentence it has just
                    # heard, said again, it often declares the rest of the window done -- or loop
                    # on one utterance: an utterance without words, or with repetitive ones, is
                    # heard alone (where the usual guards judge it) before it is called empty
                    log.debug("utterance %d of a window of %d heard again alone: %r", n, len(window.rows), text)
                    results[rows[k]] = self._transcribe(clips[k], langs[k])
                    continue
                results[rows[k]] = Transcript(
                    text=text,
                    language=info.language,
                    language_probability=float(info.language_probability),
                    words=words,
                    segments=per_row[n],
                    duration=window.durations[n],
                    window=len(window.rows),
                )
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    @staticmethod
    def _clip(audio: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))

    def _language(self, language: str | None) -> str | None:
        return "en" if self.english_only else (language or self.language)

    def _too_quiet_or_short(self, clip: np.ndarray) -> bool:
        return clip.size / SAMPLE_RATE < self.min_seconds or self.rms_dbfs(clip) < self.silence_dbfs

    def _transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        audio = self._clip(audio)
        duration = audio.size / SAMPLE_RATE
        lang = self._language(language)
        if self._too_quiet_or_short(audio):
            return Transcript.empty(duration, lang)
        if lang is None and self.languages:
            lang = self.detect_language(audio)
        segments, info = self._decode(audio, lang)
        return Transcript(
            text=" ".join(s.text for s in segments if s.text),
            language=info.language,
            language_probability=float(info.language_probability),
            words=[w for s in segments for w in s.words],
            segments=segments,
            duration=duration,
        )

    def _decode(self, audio: np.ndarray, lang: str | None, repetition_guard: bool = True) -> tuple[list[Segment], Any]:
        """Whisper on ``audio`` (one window or more), with the no-speech and (``repetition_guard``)
        repetition guards applied per segment; the transcription info (language and its
        probability) beside. A packed window's segment may span utterances that say much the same
        ("to increase ... volume", "to decrease ... volume"): its repetition is judged per
        utterance instead (:meth:`_transcribe_packed`)."""
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
            if repetition_guard and s.compression_ratio > self.compression_ratio_threshold:
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
        return segments, info

    def detect_language(self, audio: np.ndarray) -> str:
        """The most likely of the candidate ``languages`` (any language Whisper knows when there
        are none) for 16 kHz ``audio``."""
        _, _, probabilities = self.model.detect_language(audio)
        scores = dict(probabilities)
        if not self.languages:
            return max(scores, key=scores.__getitem__)
        return max(self.languages, key=lambda code: scores.get(code, 0.0))

    def __repr__(self) -> str:
        return (
            f"Transcriber({self.version}, {self.device}/{self.compute_type}, beam={self.beam_size}, "
            f"window={self.window_s:g}s)"
        )
