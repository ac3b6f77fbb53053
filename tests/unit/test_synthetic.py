"""The synthetic call-centre corpus: validity, determinism, channel, prosody and cue mix."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shared.settings import EMOTIONS
from training.data.audio import active_rms_db, estimate_f0, load_audio
from training.data.manifest import read_manifest
from training.data.prosody import Speaker, chunk_words, sample_prosody, to_ssml
from training.data.telephony import apply_channel, bandpass, mu_law, sample_channel
from training.data.templates import (
    AGENT_EMOTION,
    AGENT_NEUTRAL,
    EMOTION_FRAMES,
    LANGUAGES,
    POSITIVES,
    PROBLEMS,
    REQUESTS,
    TOPICS,
    compose,
    fill_slots,
)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

N_PER_CLASS = 4
SEED = 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny corpus (4 per class, en + ko), rendered by 2 worker processes."""
    from training.data.synthetic import generate_corpus

    out = tmp_path_factory.mktemp("synth") / "corpus"
    manifest = generate_corpus(out, N_PER_CLASS, ("en", "ko"), seed=SEED, workers=2, progress=False)
    assert manifest == out / "manifest.jsonl"
    return out


@pytest.fixture(scope="module")
def examples(corpus: Path):
    return read_manifest(corpus / "manifest.jsonl")


def test_manifest_is_valid_and_balanced(corpus: Path, examples):
    assert Counter(e.label for e in examples) == {e: N_PER_CLASS for e in EMOTIONS}
    assert Counter(e.language for e in examples) == {"en": 14, "ko": 14}
    for e in examples:
        assert e.audio_path.is_file() and e.audio_path.parent.parent == corpus / "wav"
        assert e.text and e.speaker and e.call_id and e.split in ("train", "val", "test")
        assert e.speaker.startswith(e.language) and e.call_id.startswith(e.language)
        assert {"cue", "voice", "prosody", "channel", "snr", "role"} <= set(e.extra)
    assert any("\uac00" <= ch <= "\ud7a3" for e in examples if e.language == "ko" for ch in e.text)
    raw = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(not Path(r["audio"]).is_absolute() for r in raw)


def test_cue_mix(examples):
    for emotion in EMOTIONS:
        cues = Counter(e.extra["cue"] for e in examples if e.label == emotion)
        # floor(4 * 0.3) = 1 voice-only and 1 text-only per emotional class, the rest both
        assert cues == ({"both": 4} if emotion == "neutral" else {"voice": 1, "text": 1, "both": 2})
    for e in examples:
        voice_emotion = e.extra["prosody"]["emotion"]
        assert voice_emotion == ("neutral" if e.extra["cue"] == "text" else e.label)


def test_calls_roles_and_splits(examples):
    for e in examples:
        if e.extra["role"] == "agent":
            assert e.label in ("neutral", "happiness", "surprise", "sadness")
    calls: dict[str, list] = {}
    for e in examples:
        calls.setdefault(e.call_id, []).append(e)
    for turns in calls.values():
        assert len({t.split for t in turns}) == 1 and len({t.language for t in turns}) == 1
        assert sorted(t.extra["turn"] for t in turns) == list(range(len(turns)))
        assert len({t.speaker for t in turns if t.extra["role"] == "customer"}) <= 1
    by_split = {s: {e.speaker for e in examples if e.split == s} for s in ("train", "val", "test")}
    assert not by_split["train"] & by_split["val"] and not by_split["train"] & by_split["test"]
    assert not by_split["val"] & by_split["test"]
    voices = {(e.extra["voice"], e.extra["speaker_baseline"]["pitch"]) for e in examples}
    assert len(voices) == len({e.speaker for e in examples})  # one voice/pitch combo per speaker


def test_corpus_summary_matches_manifest(corpus: Path, examples):
    summary = json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))
    assert summary["utterances"] == len(examples)
    assert summary["counts"]["label"] == {e: N_PER_CLASS for e in EMOTIONS}
    assert summary["counts"]["cue"] == dict(Counter(e.extra["cue"] for e in examples))
    assert summary["counts"]["split"] == dict(Counter(e.split for e in examples))
    assert summary["params"]["seed"] == SEED and summary["espeak_ng"].startswith("eSpeak NG")
    assert summary["timing"]["utterances_per_second"] > 0


def test_audio_is_16k_pcm16_and_band_limited(examples):
    for e in examples:
        info = sf.info(e.audio_path)
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        x = load_audio(e.audio_path)
        assert 0.5 < x.size / 16_000 < 20 and np.max(np.abs(x)) > 0.01
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / 16_000)
        speech_band = power[(freqs > 300) & (freqs < 3400)].sum()
        above = power[freqs > 3600].sum()
        assert above < 1e-3 * speech_band, e.id  # at least 30 dB down


def test_same_seed_is_byte_identical_whatever_the_worker_count(corpus: Path, tmp_path: Path):
    from training.data.synthetic import generate_corpus

    again = generate_corpus(tmp_path / "again", N_PER_CLASS, ("en", "ko"), seed=SEED, workers=1, progress=False)
    assert again.read_bytes() == (corpus / "manifest.jsonl").read_bytes()
    wavs = sorted(p.relative_to(corpus) for p in corpus.rglob("*.wav"))
    assert wavs == sorted(p.relative_to(again.parent) for p in again.parent.rglob("*.wav"))
    for rel in wavs:
        assert (corpus / rel).read_bytes() == (again.parent / rel).read_bytes(), rel


def test_different_seed_gives_a_different_corpus(tmp_path: Path):
    from training.data.synthetic import plan_corpus, render_utterance

    a = plan_corpus(tmp_path / "a", N_PER_CLASS, seed=SEED)
    b = plan_corpus(tmp_path / "b", N_PER_CLASS, seed=SEED + 1)
    assert [s.text for s in a] != [s.text for s in b]
    assert [s.speaker.voice for s in a] != [s.speaker.voice for s in b]
    render_utterance(a[0])
    render_utterance(b[0])
    assert Path(a[0].path).read_bytes() != Path(b[0].path).read_bytes()


def test_existing_corpus_is_not_overwritten_by_accident(corpus: Path):
    from training.data.synthetic import generate_corpus

    with pytest.raises(FileExistsError):
        generate_corpus(corpus, 1, ("en",), seed=0, workers=1, progress=False)


def _render_emotion(tmp_path: Path, speaker: Speaker, text: str, emotion: str, draw: int):
    """Render ``text`` by ``speaker`` with ``emotion`` prosody over a clean channel."""
    from training.data.synthetic import UtteranceSpec, render_utterance

    rng = np.random.default_rng([draw, EMOTIONS.index(emotion)])
    phrases = chunk_words(text, speaker.language, rng)
    prosody = sample_prosody(emotion, speaker, len(phrases), rng)
    spec = UtteranceSpec(
        index=draw,
        id=f"{emotion}{draw}",
        path=str(tmp_path / f"{speaker.id}-{emotion}{draw}.wav"),
        label=emotion,
        text=text,
        ssml=to_ssml(phrases, prosody),
        language=speaker.language,
        speaker=speaker,
        split="train",
        call_id="c",
        turn=0,
        topic="billing",
        cue="both",
        prosody=prosody,
        channel=sample_channel(rng, telephony=False),
        seed=0,
        sample_rate=16_000,
    )
    render_utterance(spec)
    x = load_audio(spec.path)
    f0 = estimate_f0(x, 16_000)
    return float(np.median(f0[f0 > 0])), x.size / 16_000, active_rms_db(x, 16_000)


@pytest.mark.parametrize(
    ("speaker", "text"),
    [
        (
            Speaker("en-t1", "en", "customer", "en-us+m3", "M", 50, 170, -24.0),
            "I was charged twice for my premium plan this month.",
        ),
        (Speaker("ko-t1", "ko", "customer", "ko+f2", "F", 50, 170, -24.0), "이번 달 인터넷 요금이 두 번 청구됐어요."),
    ],
)
def test_prosody_follows_the_literature_for_one_speaker(tmp_path: Path, speaker: Speaker, text: str):
    """Same speaker, same words: anger is higher, faster and louder than sadness; disgust is
    slower and lower than neutral; fear is higher than neutral (averaged over 3 draws)."""
    stats = {
        emotion: np.mean([_render_emotion(tmp_path, speaker, text, emotion, d) for d in range(3)], axis=0)
        for emotion in ("anger", "sadness", "neutral", "fear", "disgust")
    }
    f0, duration, level = (lambda e: stats[e][0]), (lambda e: stats[e][1]), (lambda e: stats[e][2])
    assert f0("anger") > 1.15 * f0("sadness")
    assert duration("sadness") > 1.2 * duration("anger")
    assert level("anger") > level("sadness") + 6
    assert f0("fear") > f0("neutral") > f0("disgust")
    assert duration("disgust") > duration("neutral")


def test_corpus_level_prosody_differs_as_intended(corpus: Path, examples):
    """Across speakers: emotional-voice anger is louder than sadness, and (relative to each
    speaker's own pitch) higher."""
    voiced = [e for e in examples if e.extra["cue"] != "text"]
    level = {
        c: np.mean([active_rms_db(load_audio(e.audio_path), 16_000) for e in voiced if e.label == c])
        for c in ("anger", "sadness")
    }
    assert level["anger"] > level["sadness"] + 5
    check = json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))["prosody_check"]
    assert check["anger"]["f0_semitones_vs_speaker"] > check["sadness"]["f0_semitones_vs_speaker"]
    assert check["anger"]["words_per_s_mean"] > check["sadness"]["words_per_s_mean"]


# ---- building blocks (no espeak needed, but cheap) ----------------------------------------------


def test_every_template_fills_in_both_languages():
    rng = np.random.default_rng(0)
    for lang in LANGUAGES:
        pools = [AGENT_NEUTRAL[lang], *AGENT_EMOTION[lang].values(), *EMOTION_FRAMES[lang].values()]
        pools += [t[topic] for t in (PROBLEMS[lang], REQUESTS[lang], POSITIVES[lang]) for topic in TOPICS]
        for pool in pools:
            for template in pool:
                filled = fill_slots(template.replace("{problem}", "").replace("{positive}", ""), lang, rng)
                assert "{" not in filled and "}" not in filled, template
        for topic in TOPICS:
            for emotion in EMOTIONS:
                for role in ("agent", "customer"):
                    assert compose(lang, role, topic, emotion, True, rng)


def test_korean_particles_follow_the_final_syllable():
    rng = np.random.default_rng(0)
    for value, subject, obj in [
        ("노트북", "이", "을"),
        ("냉장고", "가", "를"),
        ("12,000원", "이", "을"),
        ("48213", "이", "을"),
        ("48215", "가", "를"),
    ]:
        # force the value by a one-choice slot table
        from training.data import templates

        saved = templates.SLOTS["ko"]["product"]
        templates.SLOTS["ko"]["product"] = (value,)
        try:
            filled = fill_slots("{product|이/가} {product|을/를}", "ko", rng)
            assert filled == f"{value}{subject} {value}{obj}"
        finally:
            templates.SLOTS["ko"]["product"] = saved


def test_neutral_and_voice_only_wording_share_one_pool():
    """Voice-only utterances use the neutral class's wording, so words cannot separate them."""

    def pattern(template: str) -> re.Pattern[str]:
        """Slots match within a sentence; {problem}/{positive} holes match whole sentences."""
        regex = re.escape(template.replace("{problem}", "\0").replace("{positive}", "\0"))
        regex = re.sub(r"\\\{[^}]+\\\}", "[^.!?]+?", regex).replace("\0", ".+")
        return re.compile(regex + "$")

    for lang in LANGUAGES:
        neutral = [pattern(t) for t in PROBLEMS[lang]["refund"] + REQUESTS[lang]["refund"]]
        emotional = [pattern(t) for t in EMOTION_FRAMES[lang]["anger"]]
        rng = np.random.default_rng(1)
        for _ in range(30):
            voice_only = compose(lang, "customer", "refund", "anger", False, rng)
            assert any(p.match(voice_only) for p in neutral), voice_only
            neutral_class = compose(lang, "customer", "refund", "neutral", True, rng)
            assert any(p.match(neutral_class) for p in neutral), neutral_class
            worded = compose(lang, "customer", "refund", "anger", True, rng)
            assert any(p.match(worded) for p in emotional), worded
            assert not any(p.match(worded) for p in neutral), worded


def test_telephone_channel_blocks(tmp_path: Path):
    sr = 8000
    t = np.arange(sr) / sr
    assert np.sqrt(np.mean(bandpass(np.sin(2 * np.pi * 1000 * t), sr) ** 2)) == pytest.approx(0.707, rel=0.02)
    assert np.sqrt(np.mean(bandpass(np.sin(2 * np.pi * 3800 * t), sr)[300:-300] ** 2)) < 1e-3
    assert np.sqrt(np.mean(bandpass(np.sin(2 * np.pi * 100 * t), sr)[300:-300] ** 2)) < 1e-3
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    assert np.max(np.abs(mu_law(x) - x)) < 0.02 and len(np.unique(mu_law(x))) <= 256
    rng = np.random.default_rng(0)
    channel = replace(sample_channel(rng, telephony=True), snr_db=10.0, noise="babble", clip=None)
    speech = 0.1 * np.sin(2 * np.pi * 500 * np.arange(22050) / 22050).astype(np.float32)
    out = apply_channel(speech, 22050, channel, rng, out_sr=16_000)
    assert out.dtype == np.float32 and out.size == 16_000


def _band_energy(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / sr)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


def test_listening_conditions_are_the_same_for_an_utterance_and_differ_between_them():
    from training.data.telephony import CONDITIONS, condition_channel, hear

    rng = np.random.default_rng(0)
    speech = (rng.standard_normal(16_000) * 0.1).astype(np.float32)  # wide-band: energy up to 8 kHz
    assert np.array_equal(hear(speech, 16_000, "none", "u1"), speech)
    g711 = hear(speech, 16_000, "g711", "u1")
    assert _band_energy(speech, 16_000, 4_000, 8_000) > 0.4
    assert _band_energy(g711, 16_000, 4_000, 8_000) < 0.01  # the 8 kHz line's band limit
    assert _band_energy(g711, 16_000, 0, 250) < 0.01  # and its 300 Hz high-pass
    line = hear(speech, 16_000, "phone", "u1")
    assert np.array_equal(line, hear(speech, 16_000, "phone", "u1"))  # the same line every time
    assert not np.array_equal(line, hear(speech, 16_000, "phone", "u2"))
    lines = {condition_channel("phone", f"u{i}") for i in range(40)}
    assert len(lines) == 40 and any(c.mu_law for c in lines) and any(not c.mu_law for c in lines)
    assert condition_channel("g711", "u1").noise is None and CONDITIONS[:3] == ("none", "g711", "phone")
    with pytest.raises(ValueError, match="unknown listening condition 'radio'"):
        condition_channel("radio", "u1")


def _level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2))


def test_robustness_conditions_change_one_thing_each():
    from training.data.audio import estimate_f0
    from training.data.telephony import CONDITIONS, ROBUSTNESS, hear, pitch_shift

    sr = 16_000
    t = np.arange(2 * sr) / sr
    vowel = sum(0.2 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 12)).astype(np.float32)  # f0 150 Hz
    g711 = hear(vowel, sr, "g711", "u1")
    quiet = hear(vowel, sr, "g711-quiet20", "u1")
    assert _level_db(quiet) == pytest.approx(_level_db(g711) - 20, abs=0.5)
    noisy = hear(vowel, sr, "g711-snr10", "u1")
    assert np.array_equal(noisy, hear(vowel, sr, "g711-snr10", "u1"))
    assert _level_db(noisy - g711) == pytest.approx(_level_db(g711) - 10, abs=2.0)  # noise 10 dB under the speech
    for semitones in (2, -2):
        shifted = pitch_shift(vowel, sr, semitones)
        assert shifted.shape == vowel.shape  # same duration
        f0s = estimate_f0(shifted[4000:-4000], sr)
        f0 = np.median(f0s[f0s > 0])
        assert f0 == pytest.approx(150 * 2 ** (semitones / 12), rel=0.02)
        assert abs(_level_db(shifted) - _level_db(vowel)) < 3
    assert np.array_equal(hear(vowel, sr, "g711-pitch+2", "u1"), hear(pitch_shift(vowel, sr, 2), sr, "g711", "u1"))
    assert pitch_shift(vowel, sr, 0).tolist() == vowel.tolist() and set(ROBUSTNESS) < set(CONDITIONS)


def test_phone_voices_is_the_phone_line_after_a_voice_shift_for_half_the_utterances():
    from training.data.telephony import VOICE_SEMITONES, hear, pitch_shift, voice_shift

    sr = 16_000
    t = np.arange(sr) / sr
    vowel = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 10)).astype(np.float32)
    shifts = {f"u{i}": voice_shift(f"u{i}") for i in range(200)}
    assert shifts == {k: voice_shift(k) for k in shifts}  # drawn from the key: always the same voice
    moved = [v for v in shifts.values() if v != 0.0]
    assert 70 <= len(moved) <= 130 and all(abs(v) <= VOICE_SEMITONES for v in moved)
    assert min(moved) < -2 and max(moved) > 2
    kept = next(k for k, v in shifts.items() if v == 0.0)
    shifted = next(k for k, v in shifts.items() if abs(v) > 1.0)
    # the voice moves, then the utterance hears exactly the line (and noise) ``phone`` gives it
    assert np.array_equal(hear(vowel, sr, "phone-voices", kept), hear(vowel, sr, "phone", kept))
    assert np.array_equal(
        hear(vowel, sr, "phone-voices", shifted), hear(pitch_shift(vowel, sr, shifts[shifted]), sr, "phone", shifted)
    )


def test_feature_extraction_hears_each_utterance_through_its_condition_once(tmp_path):
    from training.data.manifest import Example
    from training.features import FeatureExtractor, example_key

    rng = np.random.default_rng(1)
    sf.write(tmp_path / "studio.wav", (rng.standard_normal(16_000) * 0.1).astype(np.float32), 16_000)
    studio = Example("studio-1", tmp_path / "studio.wav", "anger")
    simulated = replace(studio, id="synthetic-1", extra={"channel": {"telephony": True}})
    heard = FeatureExtractor(None, channel="g711")._heard  # type: ignore[arg-type]
    assert _band_energy(heard(studio), 16_000, 4_000, 8_000) < 0.01
    assert _band_energy(heard(simulated), 16_000, 4_000, 8_000) > 0.4  # its line is in the recording already
    assert _band_energy(FeatureExtractor(None)._heard(studio), 16_000, 4_000, 8_000) > 0.4  # type: ignore[arg-type]
    keys = {example_key(studio, c) for c in ("none", "g711", "phone")}
    assert len(keys) == 3 and example_key(studio) == example_key(studio, "none")


def test_voice_copies_are_new_speakers_whose_every_utterance_is_moved(tmp_path):
    from training.data.manifest import Example
    from training.data.telephony import pitch_shift, voice_copies
    from training.features import FeatureExtractor, example_key

    sr = 16_000
    t = np.arange(sr) / sr
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), sr)
    lines = [
        Example("ravdess-1", tmp_path / "a.wav", "anger", speaker="ravdess-01", split="train"),
        Example("ravdess-2", tmp_path / "a.wav", "sadness", speaker="ravdess-01", split="train", call_id="c1"),
        Example("meld-1", None, "anger", text="hi", speaker="ross", split="train"),  # text only
        Example("anon", tmp_path / "a.wav", "anger", split="train"),  # no speaker: no baseline to shift
        Example("synthetic-1", tmp_path / "a.wav", "fear", speaker="v1", extra={"channel": {"telephony": True}}),
        # a text line spoken flat by espeak-ng: a synthetic voice, not a speaker
        Example("meld-1-flat", tmp_path / "a.wav", "anger", text="hi", speaker="ross", extra={"text_id": "meld-1"}),
    ]
    copies = voice_copies(lines, [-2.5, 2.0])
    assert [c.id for c in copies] == ["ravdess-1~-2.5st", "ravdess-2~-2.5st", "ravdess-1~+2st", "ravdess-2~+2st"]
    assert {c.speaker for c in copies} == {"ravdess-01~-2.5st", "ravdess-01~+2st"}  # each shift: one new speaker
    assert copies[1].call_id == "c1~-2.5st" and copies[0].call_id is None
    assert [(c.label, c.split, c.extra["voice_semitones"]) for c in copies[:2]] == [
        ("anger", "train", -2.5),
        ("sadness", "train", -2.5),
    ]
    # features hear the copy's voice moved, then its line; the cache tells the copies apart
    heard = FeatureExtractor(None)._heard  # type: ignore[arg-type]
    original = heard(lines[0])
    assert np.array_equal(heard(copies[0]), pitch_shift(original, sr, -2.5)) and not np.array_equal(
        heard(copies[0]), original
    )
    moved_id = replace(copies[0], id=lines[0].id)  # the same id and file: only the shift differs
    assert example_key(moved_id, "phone") != example_key(lines[0], "phone")
