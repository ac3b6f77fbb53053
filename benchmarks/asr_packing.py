"""Packed against one-by-one Whisper: word error rate and CPU time on real telephony speech.

The speech is Debian's Asterisk prompt recordings (``apt-get install asterisk-core-sounds-en-wav
asterisk-core-sounds-en``: a human voice recorded for phone systems, 8 kHz, with the transcripts
in ``core-sounds-en.txt.gz``). The prompts are transcribed once one after another and once packed
(:mod:`training.encoders.packing`), by the same :class:`~training.encoders.asr.Transcriber`; the
queue of waiting utterances is ``batch`` prompts at a time, as the ``asr`` model sees them under
load. Both transcripts are scored against the human transcript after one normalisation.

The same comparison runs on the turns of the benchmark's generated calls (espeak-ng, English and
Korean, 8 kHz, each turn cut from its channel by its ground-truth times: :func:`call_turns`), with
both languages waiting in one queue as on a live system, and a word error rate per language.

``emotion bench --sections asr-packing`` runs :func:`run`; ``python`` callers can use
:func:`telephony_prompts`, :func:`call_turns` and :func:`word_error_rate` alone (the error rates
live in :mod:`training.transcripts`).
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.transcripts import character_error_rate, normalise, word_error_rate

log = logging.getLogger(__name__)

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")


@dataclass(frozen=True)
class Prompt:
    name: str
    audio: np.ndarray
    """16 kHz mono float32."""
    reference: str
    language: str = "en"


def telephony_prompts(
    sounds: Path = ASTERISK_SOUNDS, transcripts: Path = ASTERISK_TRANSCRIPTS, limit: int | None = None
) -> list[Prompt]:
    """The Asterisk core prompts that have a spoken transcript (not ``[tones]``), sorted by name,
    resampled to 16 kHz. Raises ``FileNotFoundError`` with the install line when they are absent."""
    from training.data.audio import load_audio

    if not transcripts.exists() or not sounds.exists():
        raise FileNotFoundError(
            f"no Asterisk prompts at {sounds} / {transcripts}: apt-get install asterisk-core-sounds-en-wav "
            "asterisk-core-sounds-en"
        )
    prompts = []
    for line in gzip.open(transcripts, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        text = text.strip()
        if not sep or line.startswith(";") or "/" in name or not text or "[" in text or not normalise(text):
            continue
        path = sounds / f"{name.strip()}.wav"
        if path.exists():
            prompts.append((name.strip(), path, text))
    prompts.sort()
    out = [Prompt(name, load_audio(path, 16_000), text) for name, path, text in prompts[:limit]]
    log.info("telephony prompts: %d with transcripts in %s", len(out), sounds)
    return out


def call_turns(calls: Sequence[Path], margin_s: float = 0.1) -> list[Prompt]:
    """Every turn of generated calls (``<call>.wav`` beside its ground truth ``<call>.json``,
    :func:`training.data.calls.generate_calls`), cut from its speaker's channel by its times with
    ``margin_s`` either side, at 16 kHz, in call order."""
    import json

    from shared.audio import read_audio, resample

    prompts = []
    for wav in calls:
        truth = json.loads(Path(wav).with_suffix(".json").read_text())
        audio, rate = read_audio(wav)
        audio = audio.reshape(audio.shape[0], -1)
        roles = truth["channel_roles"]
        for k, turn in enumerate(truth["turns"]):
            channel = roles.index(turn["speaker"]) if turn["speaker"] in roles else 0
            lo, hi = int(max(0.0, turn["start"] - margin_s) * rate), int((turn["end"] + margin_s) * rate)
            cut = resample(np.ascontiguousarray(audio[lo:hi, channel], np.float32), rate, 16_000)
            prompts.append(
                Prompt(f"{truth['call_id']}:{k}", cut, turn["text"], turn.get("language", truth["language"]))
            )
    return prompts


def compare_packing(transcriber, prompts: Sequence[Prompt], packing, batch: int = 16) -> dict:
    """WER and wall time one-by-one and packed (``batch`` prompts waiting at a time), overall and
    per language when there are several."""
    audios = [p.audio for p in prompts]
    references = [p.reference for p in prompts]
    languages = [p.language for p in prompts]
    runs = {}
    for mode, options in (("one_by_one", None), ("packed", packing)):
        t0 = time.perf_counter()
        texts = []
        for i in range(0, len(audios), batch):
            chunk = audios[i : i + batch]
            texts += [t.text for t in transcriber.transcribe_many(chunk, languages[i : i + batch], packing=options)]
        wall = time.perf_counter() - t0
        runs[mode] = {"wer": round(word_error_rate(references, texts), 4), "wall_s": round(wall, 2), "texts": texts}
    by_language = {}
    if len(set(languages)) > 1:
        for lang in sorted(set(languages)):
            keep = [i for i, x in enumerate(languages) if x == lang]
            refs = [references[i] for i in keep]
            by_language[lang] = {"utterances": len(keep)}
            for mode in runs:
                hyps = [runs[mode]["texts"][i] for i in keep]
                by_language[lang][f"wer_{mode}"] = round(word_error_rate(refs, hyps), 4)
                by_language[lang][f"cer_{mode}"] = round(character_error_rate(refs, hyps), 4)
    audio_s = sum(a.size for a in audios) / 16000
    return {
        "prompts": len(prompts),
        "audio_s": round(audio_s, 1),
        "batch": batch,
        "wer_one_by_one": runs["one_by_one"]["wer"],
        "wer_packed": runs["packed"]["wer"],
        "wall_one_by_one_s": runs["one_by_one"]["wall_s"],
        "wall_packed_s": runs["packed"]["wall_s"],
        "speedup": round(runs["one_by_one"]["wall_s"] / max(runs["packed"]["wall_s"], 1e-9), 2),
        "by_language": by_language,
        "differences": [
            {"prompt": p.name, "reference": p.reference, "one_by_one": a, "packed": b}
            for p, a, b in zip(prompts, runs["one_by_one"]["texts"], runs["packed"]["texts"], strict=True)
            if normalise(a) != normalise(b)
        ],
    }


def run(settings, threads: int, quick: bool = False, calls: Sequence[Path] = ()) -> dict:
    """The ``asr-packing`` section of ``emotion bench``: every prompt (32 with ``quick``), the
    configured packing (the default one when packing is off), ``threads`` CPU threads; then the
    same on the turns of ``calls`` (the benchmark's generated calls), under ``synthetic_calls``."""
    from training.encoders.asr import Transcriber
    from training.encoders.packing import PackingOptions

    try:
        prompts = telephony_prompts(limit=32 if quick else None)
    except FileNotFoundError as exc:
        log.warning("asr-packing: %s", exc)
        return {"skipped": str(exc)}
    packing = PackingOptions.from_settings(settings) or PackingOptions()
    transcriber = Transcriber.from_bundle(settings, cpu_threads=threads, beam_size=1)
    transcriber.transcribe(prompts[0].audio, language="en")  # warm, outside the timed part
    result = compare_packing(transcriber, prompts, packing)
    result.update(
        asr=transcriber.version, threads=threads, window_s=packing.max_window_s, gap_s=packing.gap_s, speech="Asterisk"
    )
    log.info(
        "asr-packing: %d prompts, WER %.4f one by one, %.4f packed; %.1f s against %.1f s (%.2fx)",
        result["prompts"],
        result["wer_one_by_one"],
        result["wer_packed"],
        result["wall_one_by_one_s"],
        result["wall_packed_s"],
        result["speedup"],
    )
    if calls:
        turns = call_turns(calls)
        synthetic = compare_packing(transcriber, turns, packing)
        result["synthetic_calls"] = {k: v for k, v in synthetic.items() if k != "differences"}
        log.info(
            "asr-packing: %d turns of %d generated calls, WER %.4f one by one, %.4f packed (%s); %.2fx",
            synthetic["prompts"],
            len(calls),
            synthetic["wer_one_by_one"],
            synthetic["wer_packed"],
            ", ".join(
                f"{lang} WER {v['wer_one_by_one']:.4f} -> {v['wer_packed']:.4f}, "
                f"CER {v['cer_one_by_one']:.4f} -> {v['cer_packed']:.4f}"
                for lang, v in synthetic["by_language"].items()
            ),
            synthetic["speedup"],
        )
    return result
