"""Offline feature extraction for training and evaluation, with an on-disk cache.

For every :class:`~training.data.Example` the serving path's front-ends run once:

1. the audio is loaded at 16 kHz (:func:`training.data.load_audio`);
2. the :class:`~training.encoders.Transcriber` (Whisper, word timestamps; the example's language
   when it has one) transcribes it;
3. the :class:`~training.encoders.TextEncoder` embeds the text -- the ASR transcript
   (``text_source="asr"``, the default: what serving sees) or the corpus transcript
   (``text_source="manifest"``, as the paper does for AI-Hub / IEMOCAP; ASR words are then located
   in the corpus text to build the time-aligned graph);
4. the :class:`~training.encoders.SpeechEncoder` embeds the audio.

The result is one :class:`FeatureRecord` per example: an
:class:`~training.models.UtteranceFeatures` (what :func:`training.models.collate` takes) plus the
example's id, split, language, speaker, call and synthetic-corpus cue; each carries its speaker
baseline as serving would compute it (:func:`training.speakers.attach_baselines`, a fixed draw of
sessions for corpora without calls; training re-draws them every epoch).

**Text-only examples** (``"audio": null`` in the manifest: MELD, DailyDialog, GoEmotions) get the
text branch's input only: their corpus text embedded, and no speech frames, words or edges (an
all-False speech mask, which every model reads as a missing modality). No Whisper runs for them,
so they cost the text encoder alone (about 2% of a spoken utterance); ``text_source`` does not
apply to them (there is no transcript).

Cache layout::

    <cache_dir>/<feature key>/spec.json           # the encoder versions and options behind the key
    <cache_dir>/<feature key>/<example key>.npz   # float16 hidden states / frames, words, transcript

The *feature key* hashes the bundle versions of the three encoders (content digests), the
token/frame windows, Whisper's encoder window (``models.asr_window_s``) and the cache format, so a
new encoder version never reuses stale features.
The *example key* hashes the example id, its audio file's content (SHA-256, so a copy of the corpus
elsewhere, or the same files provisioned again, keeps its features), its language and its corpus
text.  Each file holds the text embedding of both text sources (the ASR transcript and, when
the example has one, the corpus text: the text encoder costs ~2% of Whisper), so ``text_source``
is chosen when the cache is read and switching it never re-runs Whisper.  Re-running with the same
bundle loads everything from the cache without loading a single encoder.

Whisper dominates the cost on CPU (about 0.6-4 s per utterance for whisper-base on 2 cores);
``asr_model="whisper-tiny.en"`` is several times faster for English-only corpora.  ``workers=2``
runs two processes with one torch thread each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from shared.files import content_digest
from shared.settings import EMOTIONS, Settings
from training.data import Example, load_audio
from training.encoders.asr import WHISPER_WINDOW_S
from training.models import UtteranceFeatures
from training.models.graph import timed_word_spans
from training.speakers import attach_baselines

if TYPE_CHECKING:  # pragma: no cover
    from training.encoders import SpeechEncoder, TextEncoder, Transcriber

__all__ = [
    "FEATURE_FORMAT",
    "FeatureExtractor",
    "FeatureRecord",
    "FeatureSpec",
    "TextSource",
    "default_cache_dir",
    "example_key",
    "extract_features",
    "feature_spec",
]

log = logging.getLogger("training.features")

FEATURE_FORMAT = 1
"""Version of the cached file layout; bumping it invalidates every cache."""

TextSource = Literal["asr", "manifest"]
TEXT_SOURCES: tuple[str, ...] = ("asr", "manifest")


# ---- records ------------------------------------------------------------------------------------------


@dataclass
class FeatureRecord(UtteranceFeatures):
    """One example's features (:class:`~training.models.UtteranceFeatures`: hidden states in
    float16, ``label`` as a class index, ``word_spans`` precomputed) and its metadata."""

    id: str = ""
    split: str | None = None
    language: str | None = None
    cue: str | None = None
    """Synthetic corpus: which modality carries the emotion (``voice``, ``text``, ``both``)."""
    asr_text: str = ""
    """Whisper's transcript (equals ``transcript`` when ``text_source="asr"``)."""
    duration: float = 0.0
    """Seconds of audio."""
    speaker: str | None = None
    call_id: str | None = None
    """The example's speaker and call (dialogue): the session of its speaker baseline
    (:mod:`training.speakers`)."""


# ---- cache keys ---------------------------------------------------------------------------------------


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class FeatureSpec:
    """Everything the cached features of an example depend on besides the example itself."""

    asr: str
    """Bundle version (``name@digest``) of the ASR model."""
    text_encoder: str
    speech_encoder: str
    max_tokens: int
    max_frames: int
    asr_window_s: float = WHISPER_WINDOW_S
    """Whisper's shortest encoder window (``models.asr_window_s``): it changes the transcripts. In
    the key only when shorter than Whisper's own, so caches made before the setting keep their key."""
    format: int = FEATURE_FORMAT

    @property
    def key(self) -> str:
        """Folder name of this spec's cache (16 hex of a SHA-256)."""
        return _digest(self.to_dict())

    @property
    def encoders(self) -> dict[str, str]:
        """Role -> bundle version, as :class:`training.checkpoint.ModelMeta` records it."""
        return {"asr": self.asr, "text_encoder": self.text_encoder, "speech_encoder": self.speech_encoder}

    def to_dict(self) -> dict[str, Any]:
        return {
            "asr": self.asr,
            "text_encoder": self.text_encoder,
            "speech_encoder": self.speech_encoder,
            "max_tokens": self.max_tokens,
            "max_frames": self.max_frames,
            "format": self.format,
        } | ({"asr_window_s": self.asr_window_s} if self.asr_window_s < WHISPER_WINDOW_S else {})


def feature_spec(settings: Settings, asr_model: str | None = None) -> FeatureSpec:
    """The :class:`FeatureSpec` of the configured bundle (versions resolved without loading any model)."""
    from training.encoders.common import resolve_for
    from training.encoders.speech import SpeechReading

    return FeatureSpec(
        asr=resolve_for(settings, asr_model, "asr").version,
        text_encoder=resolve_for(settings, None, "text_encoder").version,
        speech_encoder=SpeechReading.of_settings(settings).version(
            resolve_for(settings, None, "speech_encoder").version
        ),
        max_tokens=settings.models.max_tokens,
        max_frames=settings.models.max_frames,
        asr_window_s=settings.models.asr_window_s,
    )


def example_key(example: Example, channel: str = "none") -> str:
    """Cache file stem of one example: its id, the content digest of its audio file, language, text
    and listening condition (``channel``, when not ``none``); a text-only example's: its id,
    language and text.

    The audio is keyed by its bytes, not by where it lies or when it was written, so a corpus
    copied elsewhere or provisioned again keeps its features (:func:`shared.files.content_digest`
    reads each file once per process)."""
    if example.audio_path is None:
        return _digest([example.id, "text-only", example.language, example.text], 24)
    try:
        audio: str | None = content_digest(example.audio_path)
    except OSError:
        audio = None  # loading the audio will fail with a clear error
    heard = [] if channel == "none" else [channel]
    if example.extra.get("voice_semitones"):
        heard.append(f"voice{float(example.extra['voice_semitones']):+g}")
    return _digest([example.id, audio, example.language, example.text, *heard], 24)


def default_cache_dir(settings: Settings) -> Path:
    """``<home>/features``."""
    return settings.home / "features"


# ---- the encoders -------------------------------------------------------------------------------------


class FeatureExtractor:
    """The three front-ends of the bundle, loaded on first use, turning examples into cacheable arrays.

    ``compute(examples)`` returns one dict of numpy arrays per example (the cached file's content:
    the ASR result, the speech frames, and the text embedding of each available text source).
    Tests may replace the encoders by assigning the attributes.
    """

    def __init__(
        self, settings: Settings, asr_model: str | None = None, threads: int = 1, channel: str = "none"
    ) -> None:
        self.settings = settings
        self.asr_model = asr_model
        self.threads = max(1, int(threads))
        self.channel = channel
        """Listening condition the audio goes through first (:data:`training.data.telephony.CONDITIONS`)."""

    @cached_property
    def transcriber(self) -> Transcriber:
        from training.encoders import Transcriber

        return Transcriber.from_bundle(self.settings, self.asr_model, cpu_threads=self.threads)

    @cached_property
    def text_encoder(self) -> TextEncoder:
        from training.encoders import TextEncoder

        return TextEncoder.from_bundle(self.settings, threads=self.threads)

    @cached_property
    def speech_encoder(self) -> SpeechEncoder:
        from training.encoders import SpeechEncoder

        return SpeechEncoder.from_bundle(self.settings, threads=self.threads)

    def _embed_texts(self, source: str, texts: list[str]) -> list[dict[str, np.ndarray]]:
        emb = self.text_encoder.encode(texts)
        out = []
        for i, text in enumerate(texts):
            n = _prefix_length(emb.mask[i])
            out.append(
                {
                    f"{source}__text": np.array(text),
                    f"{source}__text_hidden": emb.hidden[i, :n].astype(np.float16),
                    f"{source}__text_mask": emb.mask[i, :n],
                    f"{source}__token_offsets": emb.offsets[i, :n].astype(np.int32),
                }
            )
        return out

    def compute(self, examples: Sequence[Example]) -> list[dict[str, np.ndarray]]:
        """Transcribe and embed ``examples`` (text and speech encoders batched over them); a
        text-only example gets its corpus text embedded and empty speech."""
        spoken = [i for i, ex in enumerate(examples) if ex.audio_path is not None]
        out: list[dict[str, np.ndarray]] = [{} for _ in examples]
        for i, arrays in zip(spoken, self._compute_spoken([examples[i] for i in spoken]), strict=True):
            out[i] = arrays
        text_only = [i for i, ex in enumerate(examples) if ex.audio_path is None]
        if text_only:
            if any(not (examples[i].text or "").strip() for i in text_only):
                raise ValueError("a text-only example needs its text (the manifest reader checks this)")
            dim = self.speech_encoder.dim
            for i, part in zip(
                text_only, self._embed_texts("manifest", [str(examples[i].text) for i in text_only]), strict=True
            ):
                out[i] = {
                    **part,
                    "speech_frames": np.zeros((0, dim), np.float16),
                    "speech_mask": np.zeros(0, bool),
                    "frame_times": np.zeros(0, np.float32),
                    "asr_language": np.array(""),
                    "word_text": np.zeros(0, dtype=str),
                    "word_times": np.zeros((0, 2), np.float32),
                    "duration": np.array(0.0, np.float32),
                    "example_id": np.array(examples[i].id),
                }
        return out

    def _heard(self, example: Example) -> np.ndarray:
        """The example's 16 kHz audio through :attr:`channel`. An utterance whose manifest records a
        simulated line already (the synthetic corpus's ``extra.channel``) is not put through a second one."""
        from training.data.telephony import hear, pitch_shift

        audio = load_audio(example.audio_path, 16_000)
        if example.extra.get("voice_semitones"):  # a copy of a speaker with another voice (voice_copies)
            audio = pitch_shift(audio, 16_000, float(example.extra["voice_semitones"]))
        if self.channel == "none" or example.extra.get("channel"):
            return audio
        return hear(audio, 16_000, self.channel, example.id)

    def _compute_spoken(self, examples: Sequence[Example]) -> list[dict[str, np.ndarray]]:
        if not examples:
            return []
        audios = [self._heard(ex) for ex in examples]
        transcripts = [
            self.transcriber.transcribe(a, language=ex.language) for a, ex in zip(audios, examples, strict=True)
        ]
        out: list[dict[str, np.ndarray]] = [{} for _ in examples]
        for i, part in enumerate(self._embed_texts("asr", [t.text for t in transcripts])):
            out[i].update(part)
        with_text = [i for i, ex in enumerate(examples) if ex.text is not None]
        if with_text:
            parts = self._embed_texts("manifest", [str(examples[i].text) for i in with_text])
            for i, part in zip(with_text, parts, strict=True):
                out[i].update(part)
        speech = self.speech_encoder.encode(audios)
        for i, (ex, tr) in enumerate(zip(examples, transcripts, strict=True)):
            n_fr = _prefix_length(speech.mask[i])
            out[i].update(
                {
                    "speech_frames": speech.frames[i, :n_fr].astype(np.float16),
                    "speech_mask": speech.mask[i, :n_fr],
                    "frame_times": speech.frame_times[i, :n_fr].astype(np.float32),
                    "asr_language": np.array(tr.language or ""),
                    "word_text": np.array([w.text for w in tr.words], dtype=str).reshape(-1),
                    "word_times": np.array([(w.start, w.end) for w in tr.words], np.float32).reshape(-1, 2),
                    "duration": np.array(float(speech.durations[i]), np.float32),
                    "example_id": np.array(ex.id),
                }
            )
        return out


def _prefix_length(mask: np.ndarray) -> int:
    """Positions up to the last valid one (masks are prefixes, but a hole would be kept)."""
    valid = np.flatnonzero(mask)
    return int(valid[-1]) + 1 if valid.size else 0


# ---- cache files --------------------------------------------------------------------------------------


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (a concurrent reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, path)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    if x.shape[0] >= length:
        return x[:length]
    return np.concatenate([x, np.zeros((length - x.shape[0], *x.shape[1:]), x.dtype)])


def _record(
    arrays: dict[str, np.ndarray],
    example: Example,
    spec: FeatureSpec,
    class_index: dict[str, int],
    text_source: TextSource,
) -> FeatureRecord:
    if example.label not in class_index:
        raise ValueError(f"{example.id}: label {example.label!r} is not one of {list(class_index)}")
    if "asr__text" not in arrays:  # text-only: its corpus text is all there is
        source = "manifest"
    else:
        source = text_source if f"{text_source}__text" in arrays else "asr"  # no corpus text: the ASR one
    transcript = str(arrays[f"{source}__text"])
    words = [
        (str(t), float(s), float(e))
        for t, (s, e) in zip(arrays["word_text"].tolist(), arrays["word_times"], strict=True)
    ]
    t, f = spec.max_tokens, spec.max_frames
    return FeatureRecord(
        text_hidden=_pad(arrays[f"{source}__text_hidden"], t),
        text_mask=_pad(arrays[f"{source}__text_mask"], t),
        token_offsets=_pad(arrays[f"{source}__token_offsets"], t),
        speech_frames=_pad(arrays["speech_frames"], f),
        speech_mask=_pad(arrays["speech_mask"], f),
        frame_times=_pad(arrays["frame_times"], f),
        transcript=transcript,
        words=words,
        word_spans=timed_word_spans(transcript, words),
        label=class_index[example.label],
        id=example.id,
        split=example.split,
        language=example.language or (str(arrays["asr_language"]) or None),
        cue=example.extra.get("cue"),
        asr_text=str(arrays.get("asr__text", "")),
        duration=float(arrays["duration"]),
        speaker=example.speaker,
        call_id=example.call_id,
    )


# ---- worker processes ---------------------------------------------------------------------------------

_WORKER: FeatureExtractor | None = None


def _init_worker(settings: Settings, asr_model: str | None, channel: str) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)
    _WORKER = FeatureExtractor(settings, asr_model, threads=1, channel=channel)


def _work(examples: list[Example], paths: list[Path]) -> int:
    assert _WORKER is not None
    for arrays, path in zip(_WORKER.compute(examples), paths, strict=True):
        _save(path, arrays)
    return len(examples)


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for lo in range(0, len(items), size):
        yield list(items[lo : lo + size])


# ---- the entry point ----------------------------------------------------------------------------------


def extract_features(
    settings: Settings,
    examples: Sequence[Example],
    cache_dir: str | Path | None = None,
    text_source: TextSource = "asr",
    workers: int = 1,
    progress: bool = True,
    *,
    asr_model: str | None = None,
    class_names: Sequence[str] = EMOTIONS,
    batch_size: int = 8,
    threads: int | None = None,
    extractor: FeatureExtractor | None = None,
    channel: str = "none",
) -> list[FeatureRecord]:
    """Features of ``examples`` (same order), computed once and cached under ``cache_dir``.

    ``cache_dir`` defaults to ``<home>/features``; ``text_source`` is ``"asr"`` (the Whisper
    transcript, as in serving) or ``"manifest"`` (the corpus text); ``asr_model`` overrides
    ``settings.models.asr`` (e.g. ``whisper-tiny.en``); ``workers > 1`` computes the missing
    features in that many processes (one torch thread each); ``threads`` is the torch threads of
    the in-process extractor (default: the CPU count); ``extractor`` replaces the bundle's encoders
    (tests); ``channel`` is the listening condition the audio goes through first
    (:data:`training.data.telephony.CONDITIONS`: ``none``, ``g711``, ``phone``; part of the cache key).  Labels become indices in ``class_names``.  The rate of the computed part is logged.
    """
    if text_source not in TEXT_SOURCES:
        raise ValueError(f"text_source must be one of {TEXT_SOURCES}, got {text_source!r}")
    spec = feature_spec(settings, asr_model)
    directory = Path(cache_dir or default_cache_dir(settings)) / spec.key
    directory.mkdir(parents=True, exist_ok=True)
    spec_file = directory / "spec.json"
    if not spec_file.exists():
        spec_file.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    from training.data.telephony import CONDITIONS

    if channel not in CONDITIONS:
        raise ValueError(f"channel must be one of {CONDITIONS}, got {channel!r}")
    paths = [directory / f"{example_key(ex, channel)}.npz" for ex in examples]
    if len(set(paths)) != len(paths):
        raise ValueError("duplicate examples (same id, audio and language) in the feature request")
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per utterance otherwise
    log.info(
        "features: %d examples, %d cached, %d to compute (asr=%s, text=%s, speech=%s, text_source=%s, channel=%s) in %s",
        len(examples),
        len(examples) - len(todo),
        len(todo),
        spec.asr,
        spec.text_encoder,
        spec.speech_encoder,
        text_source,
        channel,
        directory,
    )
    if todo:
        started = time.perf_counter()
        todo_examples = [examples[i] for i in todo]
        todo_paths = [paths[i] for i in todo]
        bar = tqdm(total=len(todo), desc="features", unit="utt", disable=not progress, dynamic_ncols=True)
        try:
            if workers > 1 and extractor is None and len(todo) > batch_size:
                _compute_in_pool(
                    settings, asr_model, channel, todo_examples, todo_paths, workers, batch_size, bar.update
                )
            else:
                ex = extractor or FeatureExtractor(settings, asr_model, threads or (os.cpu_count() or 1), channel)
                ex.channel = channel
                for chunk_ex, chunk_paths in zip(
                    _chunks(todo_examples, batch_size), _chunks(todo_paths, batch_size), strict=True
                ):
                    for arrays, path in zip(ex.compute(chunk_ex), chunk_paths, strict=True):
                        _save(path, arrays)
                    bar.update(len(chunk_ex))
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        audio_s = sum(float(_load(paths[i])["duration"]) for i in todo)
        log.info(
            "features: computed %d in %.1f s: %.2f utterances/s, %.2f s per utterance, %.1fx real time (workers=%d)",
            len(todo),
            seconds,
            len(todo) / seconds,
            seconds / len(todo),
            audio_s / seconds,
            max(1, workers),
        )
    index = {name: i for i, name in enumerate(class_names)}
    records = [_record(_load(p), ex, spec, index, text_source) for p, ex in zip(paths, examples, strict=True)]
    if text_source == "manifest" and (n := sum(ex.text is None for ex in examples)):
        log.warning("features: %d examples have no corpus text: their ASR transcript is used", n)
    attach_baselines(records, settings.models.speaker_window)
    return records


def _compute_in_pool(
    settings: Settings,
    asr_model: str | None,
    channel: str,
    examples: list[Example],
    paths: list[Path],
    workers: int,
    batch_size: int,
    update: Callable[[int], Any],
) -> None:
    """Spread the examples over ``workers`` spawned processes (each loads the encoders once)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that already runs torch threads
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(settings, asr_model, channel)
    ) as pool:
        futures = [
            pool.submit(_work, chunk_ex, chunk_paths)
            for chunk_ex, chunk_paths in zip(_chunks(examples, batch_size), _chunks(paths, batch_size), strict=True)
        ]
        for future in as_completed(futures):
            update(future.result())
