"""Text corpora spoken flat (training.data.spoken, `emotion data speak`): the words-only slice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf

from training.data.audio import active_rms_db
from training.data.manifest import Example, read_manifest, write_manifest
from training.data.spoken import SAMPLE_RATE, flat_voices, speak_flat

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def _lines(tmp_path: Path) -> list[Example]:
    clip = tmp_path / "already.wav"
    sf.write(clip, [0.0] * 1600, SAMPLE_RATE)
    return [
        Example("d1-u0", None, "anger", "I have been waiting for an hour!", "ann", "en", "test", "d1"),
        Example("d1-u1", None, "neutral", "Let me check that for you.", "bob", "en", "test", "d1"),
        Example("d1-u2", None, "happiness", "That is wonderful, thank you so much.", "ann", "en", "test", "d1"),
        Example("d2-u0", None, "sadness", "I lost my job last week.", "cid", "en", "train", "d2"),
        Example("d2-u1", None, "neutral", "   ", "cid", "en", "test", "d2"),  # no words: nothing to speak
        Example("spoken", clip, "neutral", "already audio", "eve", "en", "test", "d3"),  # not text-only
    ]


def test_speak_flat_gives_each_text_line_audio_with_one_voice_per_speaker(tmp_path: Path) -> None:
    lines = _lines(tmp_path)
    spoken = speak_flat(lines, tmp_path / "out", split="test", progress=False)
    # the test split's text-only lines with words, under their own ids: both forms can share a corpus
    assert [ex.id for ex in spoken] == ["d1-u0-flat", "d1-u1-flat", "d1-u2-flat"]
    assert [ex.extra["text_id"] for ex in spoken] == ["d1-u0", "d1-u1", "d1-u2"]
    for ex, original in zip(spoken, lines):
        assert (ex.label, ex.text, ex.speaker, ex.call_id, ex.split) == (
            original.label,
            original.text,
            original.speaker,
            original.call_id,
            original.split,
        )
        assert ex.extra["cue"] == "text" and ex.extra["spoken"].startswith("espeak-ng flat ")
        audio, sr = sf.read(ex.audio_path, dtype="float32")
        assert sr == SAMPLE_RATE and audio.size > 0.5 * SAMPLE_RATE
        assert active_rms_db(audio, sr) == pytest.approx(-26.0, abs=1.0)
    voices = {ex.speaker: ex.extra["spoken"] for ex in spoken}
    assert spoken[0].extra["spoken"] == spoken[2].extra["spoken"] == voices["ann"]  # one voice per speaker
    assert set(voices.values()) <= {f"espeak-ng flat {v}" for v in flat_voices("en")}
    # a rerun speaks only what is missing; the manifest it gives reads back with its audio
    first = spoken[0].audio_path
    stamp = first.stat().st_mtime_ns
    first_two = speak_flat(lines, tmp_path / "out", split="test", take=2, seed=1, progress=False)
    assert len(first_two) == 2 and first.stat().st_mtime_ns == stamp
    manifest = write_manifest(tmp_path / "out" / "manifest.jsonl", spoken)
    assert [ex.audio_path for ex in read_manifest(manifest)] == [ex.audio_path for ex in spoken]
    both = write_manifest(tmp_path / "both.jsonl", [*lines[:3], *spoken])  # as text and spoken, one corpus
    assert len(read_manifest(both)) == 6


def test_data_speak_command_writes_the_manifest_and_refuses_an_empty_selection(tmp_path: Path, capsys) -> None:
    from emotion.cli import main

    lines = [ex for ex in _lines(tmp_path) if ex.text.strip()]  # a manifest line needs audio or text
    source = write_manifest(tmp_path / "corpus.jsonl", lines)
    out = tmp_path / "spoken"
    assert main(["data", "speak", str(source), "--out", str(out), "--split", "train", "--workers", "1"]) == 0
    assert "spoke 1 of 5 lines flat" in capsys.readouterr().out
    (line,) = read_manifest(out / "manifest.jsonl")
    assert line.id == "d2-u0-flat" and line.audio_path is not None and line.audio_path.is_file()
    assert main(["data", "speak", str(source), "--out", str(out), "--split", "val"]) == 1
    assert "no text-only lines to speak in split val" in capsys.readouterr().out
    assert main(["data", "speak", str(source), "--out", str(out), "--take", "0"]) == 2
