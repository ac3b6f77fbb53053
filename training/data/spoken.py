"""Text corpora spoken flat: the words-only slice heard through the real audio path.

MELD, DailyDialog and GoEmotions have no audio. To measure what the served model makes of their
words *as a call centre hears them* (Whisper's transcript of speech, not the corpus text), this
module speaks each text-only utterance with espeak-ng in a flat voice: the voice's default pitch,
one speaking rate, no SSML, no emotional prosody. Whatever emotion the model finds is in the
words. Each speaker of the corpus keeps one voice (picked from the speaker's name among the
installed voices of the language), so per-speaker normalisation sees one voice per speaker, as in a
call. The audio is brought to -26 dBFS active speech level (ITU-T P.56's telephone level) and
written as 16 kHz WAV; ``emotion eval --channel g711`` then puts it through a phone line.

``emotion data speak meld.jsonl --out spoken/meld-test --split test --take 300`` writes
``spoken/meld-test/wav/<id>-flat.wav`` and ``spoken/meld-test/manifest.jsonl``: the same lines
with their audio, under the id ``<id>-flat`` (so ``emotion data mix`` can join them with the text
lines they come from), ``extra.cue = "text"``, ``extra.text_id`` and ``extra.spoken = "espeak-ng
flat <voice>"``.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.data.audio import normalise_level, resample, write_wav
from training.data.espeak import EspeakError, list_language_voices, list_variants, synthesize
from training.data.manifest import Example
from training.data.synthetic import BASE_VOICES, FEMALE_VARIANTS, MALE_VARIANTS

__all__ = ["FLAT_RATE_WPM", "SAMPLE_RATE", "SPOKEN_SUFFIX", "flat_voices", "speak_flat"]

FLAT_RATE_WPM = 165
"""One speaking rate for every utterance (espeak-ng's ``-s``, words per minute)."""
SAMPLE_RATE = 16_000
SPOKEN_SUFFIX = "-flat"
"""A spoken line's id is its text line's id with this suffix (``extra.text_id`` names the text
line), so that a corpus can be mixed in both forms, as text and spoken."""
LEVEL_DBFS = -26.0


def flat_voices(language: str) -> tuple[str, ...]:
    """The installed espeak-ng voices a speaker of ``language`` may get (base voice + variant)."""
    installed = set(list_language_voices(language))
    bases = [b for b in BASE_VOICES.get(language, ()) if b in installed] or sorted(installed)
    if not bases:
        raise EspeakError(f"espeak-ng has no voice for language {language!r} (espeak-ng --voices={language})")
    variants = {v.file for v in list_variants()}
    usable = [v for v in (*MALE_VARIANTS, *FEMALE_VARIANTS) if v in variants]
    return tuple(f"{b}+{v}" for b in bases[:1] for v in usable) or (bases[0],)


def _voice_of(example: Example, voices: Sequence[str]) -> str:
    who = example.speaker or example.call_id or example.id
    return voices[zlib.crc32(who.encode("utf-8")) % len(voices)]


def _speak_one(job: tuple[str, str, str]) -> str:
    """Worker: speak ``text`` with ``voice`` into ``path`` (returns the path)."""
    text, voice, path = job
    speech, sr = synthesize(text, voice, rate=FLAT_RATE_WPM)
    speech = resample(speech, sr, SAMPLE_RATE)
    write_wav(path, np.clip(normalise_level(speech, SAMPLE_RATE, LEVEL_DBFS), -1.0, 1.0), SAMPLE_RATE)
    return path


def speak_flat(
    examples: Sequence[Example],
    out_dir: str | Path,
    *,
    split: str | None = None,
    take: int | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> list[Example]:
    """Speak the text-only ``examples`` (of ``split``; a seeded random ``take`` of them) flat into
    ``out_dir/wav``; returns them with their audio. Lines that already have audio, or no text,
    are left out. Existing WAVs are kept (a rerun only speaks what is missing)."""
    out = Path(out_dir)
    chosen = [ex for ex in examples if ex.audio_path is None and (ex.text or "").strip() and split in (None, ex.split)]
    if take is not None and len(chosen) > take:  # a seeded sample, in corpus order
        chosen = [chosen[i] for i in sorted(random.Random(seed).sample(range(len(chosen)), take))]
    voices = {lang: flat_voices(lang) for lang in sorted({ex.language or "en" for ex in chosen})}
    spoken, jobs = [], []
    for ex in chosen:
        voice = _voice_of(ex, voices[ex.language or "en"])
        spoken_id = f"{ex.id}{SPOKEN_SUFFIX}"
        path = out / "wav" / f"{spoken_id}.wav"
        if not path.is_file():
            jobs.append((ex.text or "", voice, str(path)))
        extra = {**ex.extra, "cue": "text", "spoken": f"espeak-ng flat {voice}", "text_id": ex.id}
        spoken.append(replace(ex, id=spoken_id, audio_path=path.resolve(), extra=extra))
    bar = tqdm(total=len(jobs), desc="speaking flat", unit="utt", disable=not progress or not jobs)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_speak_one, jobs, chunksize=8):
                bar.update()
    else:
        for job in jobs:
            _speak_one(job)
            bar.update()
    bar.close()
    return spoken
