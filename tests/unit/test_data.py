"""Dataset readers in their real formats, the manifest, splits and audio loading."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shared.settings import EMOTIONS
from training.data.aihub import detect_encoding, load_aihub
from shared.audio import AudioError, resample
from training.data.audio import active_rms_db, estimate_f0, load_audio, normalise_level
from training.data.iemocap import load_iemocap, parse_emo_evaluation, session_folds
from training.data.labels import normalize_emotion
from training.data.manifest import (
    Example,
    ManifestError,
    assign_splits,
    read_manifest,
    split_examples,
    write_manifest,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)])


# ---- IEMOCAP ------------------------------------------------------------------------------------


@pytest.fixture()
def iemocap_root(tmp_path: Path) -> Path:
    """The committed EmoEvaluation/transcription fixtures plus tiny wavs in the release layout."""
    root = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(FIXTURES / "iemocap", root)
    for eval_file in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        session_dir = eval_file.parents[2]
        for entry in parse_emo_evaluation(eval_file):
            wav = session_dir / "sentences" / "wav" / eval_file.stem / f"{entry.utterance}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, _tone(entry.end - entry.start, 16_000), 16_000, subtype="PCM_16")
    return root


def test_emo_evaluation_keeps_consensus_lines_and_ignores_evaluator_lines():
    entries = parse_emo_evaluation(FIXTURES / "iemocap/Session1/dialog/EmoEvaluation/Ses01F_impro01.txt")
    assert [e.utterance for e in entries] == [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_M000",
        "Ses01F_impro01_F001",
        "Ses01F_impro01_M001",
        "Ses01F_impro01_F002",
    ]
    first = entries[0]
    assert (first.start, first.end, first.code, first.vad) == (
        6.2901,
        8.2357,
        "neu",
        (2.5, 2.5, 2.5),
    )
    assert [e.code for e in entries] == ["neu", "fru", "ang", "xxx", "exc"]


def test_emo_evaluation_malformed_consensus_line_names_the_line(tmp_path: Path):
    bad = tmp_path / "Ses01F_impro01.txt"
    bad.write_text("% header\n\n[6.29 - 8.23]\tSes01F_impro01_F000\tneu\n")
    with pytest.raises(ManifestError, match=r"Ses01F_impro01.txt:3"):
        parse_emo_evaluation(bad)


def test_iemocap_4class(iemocap_root: Path):
    examples = load_iemocap(iemocap_root, "4class")
    by_id = {e.id: e for e in examples}
    assert {k: v.label for k, v in by_id.items()} == {
        "Ses01F_impro01_F000": "neutral",
        "Ses01F_impro01_F001": "anger",
        "Ses01F_impro01_F002": "happiness",  # exc merged into happiness
        "Ses01M_script01_1_F000": "happiness",
        "Ses01M_script01_1_M000": "sadness",
        "Ses01M_script01_1_M002": "neutral",
        "Ses05F_impro03_F000": "neutral",
        "Ses05F_impro03_M000": "anger",
    }
    f000 = by_id["Ses01F_impro01_F000"]
    assert f000.text == "Excuse me."
    assert f000.audio_path == iemocap_root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    assert f000.speaker == "Ses01F" and f000.language == "en" and f000.call_id == "Ses01F_impro01"
    assert f000.extra["vad"] == [2.5, 2.5, 2.5] and f000.extra["improvised"] is True
    # the speaker is the utterance's own gender, not the dialog's (Ses01M_..._F000 is a woman)
    assert by_id["Ses01M_script01_1_F000"].speaker == "Ses01F"
    assert by_id["Ses01M_script01_1_M000"].speaker == "Ses01M"
    assert by_id["Ses01M_script01_1_M000"].text == "My father passed away last week."
    assert {e.split for e in examples if e.extra["session"] == 5} == {"test"}
    assert {e.split for e in examples if e.extra["session"] == 1} == {"train"}


def test_iemocap_full_and_7class_maps(iemocap_root: Path):
    full = {e.id: e.label for e in load_iemocap(iemocap_root, "full")}
    assert full["Ses01F_impro01_M000"] == "frustration"
    assert full["Ses01F_impro01_F002"] == "excitement"
    assert full["Ses01M_script01_1_F001"] == "surprise"
    assert "Ses01F_impro01_M001" not in full  # xxx dropped by default
    assert "Ses01M_script01_1_M001" not in full  # oth dropped by default
    with_all = {e.id: e.label for e in load_iemocap(iemocap_root, "full", drop=())}
    assert with_all["Ses01F_impro01_M001"] == "undecided" and with_all["Ses01M_script01_1_M001"] == "other"

    seven = load_iemocap(iemocap_root, "7class")
    assert {e.label for e in seven} <= set(EMOTIONS)
    assert {e.id: e.label for e in seven}["Ses01M_script01_1_F001"] == "surprise"
    assert "Ses01F_impro01_M000" not in {e.id for e in seven}  # frustration has no AI-Hub class


def test_iemocap_missing_wav_is_reported_or_skipped(iemocap_root: Path):
    (iemocap_root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F001.wav").unlink()
    with pytest.raises(ManifestError, match=r"1 IEMOCAP wav file\(s\) missing.*Ses01F_impro01_F001.wav"):
        load_iemocap(iemocap_root)
    assert "Ses01F_impro01_F001" not in {e.id for e in load_iemocap(iemocap_root, require_audio=False)}


def test_iemocap_wrong_root_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ManifestError, match=r"no Session1\.\.Session5"):
        load_iemocap(tmp_path)


def test_iemocap_session_folds_are_leave_one_session_out(iemocap_root: Path):
    folds = session_folds(load_iemocap(iemocap_root, test_session=None))
    assert [s for s, _, _ in folds] == [1, 5]
    for session, train, test in folds:
        assert {e.extra["session"] for e in test} == {session}
        assert session not in {e.extra["session"] for e in train}
        assert {e.split for e in train} == {"train"} and {e.split for e in test} == {"test"}
        assert not {e.speaker for e in train} & {e.speaker for e in test}


# ---- AI-Hub -------------------------------------------------------------------------------------


def _aihub_copy(tmp_path: Path, name: str, encoding: str, wav_sub: str = "") -> Path:
    csv_path = tmp_path / name
    csv_path.write_bytes((FIXTURES / "aihub" / name).read_text(encoding="utf-8").encode(encoding))
    wav_dir = tmp_path / "wav" / wav_sub
    wav_dir.mkdir(parents=True, exist_ok=True)
    with (FIXTURES / "aihub" / name).open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            sf.write(wav_dir / f"{row['wav_id']}.wav", _tone(0.3, 16_000), 16_000, subtype="PCM_16")
    return csv_path


AIHUB_MAJORITY = {
    "5e2979c25807b852d9e018d5": "anger",
    "5e298bf65807b852d9e01a91": "sadness",
    "5e31622f5807b852d9e02006": "neutral",
    "5e3167775807b852d9e0209b": "happiness",
    "5e31679c5807b852d9e020a4": "fear",  # 2-2 tie, equal strength: the first annotator wins
    "5e3167c25807b852d9e020ad": "disgust",
    "5e3167e45807b852d9e020b6": "surprise",  # 2-2 tie broken by the larger summed 감정세기
}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp949", "euc-kr"])
def test_aihub_csv_majority_vote_in_every_encoding(tmp_path: Path, encoding: str):
    csv_path = _aihub_copy(tmp_path, "emotion_dialogue.csv", encoding)
    assert detect_encoding(csv_path) == ("cp949" if encoding in ("cp949", "euc-kr") else "utf-8-sig")
    examples = load_aihub(csv_path, tmp_path / "wav")
    assert {e.id: e.label for e in examples} == AIHUB_MAJORITY
    happy = next(e for e in examples if e.label == "happiness")
    assert happy.text == "환불이 벌써 들어왔네요, 감사합니다!"  # quoted field with a comma
    assert happy.audio_path == tmp_path / "wav" / "5e3167775807b852d9e0209b.wav"
    assert happy.language == "ko" and happy.extra["label_source"] == "majority"
    assert happy.extra["votes"] == ["happiness", "happiness", "surprise", "happiness", "neutral"]
    assert happy.extra["agreement"] == pytest.approx(0.6)
    assert happy.extra["situation"] == "happiness" and happy.extra["gender"] == "female"
    assert {e.extra["situation"] for e in examples} == set(EMOTIONS)  # "sad", "anger" ... normalised


def test_aihub_final_column_korean_labels_and_nested_wavs(tmp_path: Path):
    csv_path = _aihub_copy(tmp_path, "emotion_final_korean.csv", "cp949", wav_sub="nested/deeper")
    examples = load_aihub(csv_path, tmp_path / "wav")
    assert [e.label for e in examples] == list(EMOTIONS)
    assert all(e.extra["label_source"] == "final" for e in examples)
    assert examples[0].audio_path == tmp_path / "wav/nested/deeper/ko_0001.wav"
    # majority over the annotators instead of the final column
    by_vote = load_aihub(csv_path, tmp_path / "wav", label_source="majority")
    assert [e.label for e in by_vote] == list(EMOTIONS)
    by_situation = load_aihub(csv_path, tmp_path / "wav", label_source="situation")
    assert [e.label for e in by_situation] == list(EMOTIONS)


def test_aihub_column_name_variants(tmp_path: Path):
    csv_path = tmp_path / "variant.csv"
    csv_path.write_text(
        "WAV_ID\t발화\t1번감정\t1번감정세기\t2번감정\t2번감정세기\t3번감정\t3번감정세기\n"
        "a1\t안녕하세요\tNEUTRAL\t0\tneutral\t0\tangry\t1\n",
        encoding="utf-8",
    )
    sf.write(tmp_path / "a1.wav", _tone(0.2, 8000), 8000)
    (ex,) = load_aihub(csv_path)
    assert (ex.id, ex.label, ex.text) == ("a1", "neutral", "안녕하세요")


def test_aihub_missing_columns_lists_the_columns_found(tmp_path: Path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("파일,문장,나이\nx,hello,30\n", encoding="utf-8")
    found = r"columns found: \['파일', '문장', '나이'\]"
    with pytest.raises(ManifestError, match=r"missing an emotion column.*" + found):
        load_aihub(csv_path)
    csv_path.write_text("문장,감정\nhello,Angry\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"missing a wav id column"):
        load_aihub(csv_path)


def test_aihub_unknown_label_and_missing_wav(tmp_path: Path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("wav_id,감정\nw1,Angry\nw2,Bored\nw3,Sadness\n", encoding="utf-8")
    for name in ("w1", "w2"):
        sf.write(tmp_path / f"{name}.wav", _tone(0.2, 16_000), 16_000)
    with pytest.raises(ManifestError, match=r"row 3 \(w2\): unknown emotion value\(s\) \['Bored'\]"):
        load_aihub(csv_path)
    with pytest.raises(ManifestError, match=r"1 wav file\(s\) listed .* missing.*w3.wav"):
        load_aihub(csv_path, unknown="skip")
    assert [e.id for e in load_aihub(csv_path, unknown="skip", missing="skip")] == ["w1"]


def test_normalize_emotion_spellings():
    assert normalize_emotion("Angry") == normalize_emotion("분노") == "anger"
    assert normalize_emotion(" SADNESS ") == normalize_emotion("슬픔") == "sadness"
    assert normalize_emotion("행복") == normalize_emotion("Happiness") == "happiness"
    assert [normalize_emotion(k) for k in ("중립", "공포", "혐오", "놀람")] == [
        "neutral",
        "fear",
        "disgust",
        "surprise",
    ]
    assert normalize_emotion("bored") is None and normalize_emotion("") is None


# ---- manifest -----------------------------------------------------------------------------------


def _wav(path: Path, seconds: float = 0.1, sr: int = 16_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _tone(seconds, sr), sr, subtype="PCM_16")
    return path


def test_manifest_round_trip_relative_and_absolute_paths(tmp_path: Path):
    inside = _wav(tmp_path / "corpus" / "wav" / "a.wav")
    outside = _wav(tmp_path / "elsewhere" / "b.wav")
    examples = [
        Example(
            "a",
            inside,
            "anger",
            text="화가 나요",
            speaker="s1",
            language="ko",
            split="train",
            call_id="c1",
            extra={"cue": "both", "snr": 12.5},
        ),
        Example("b", outside, "neutral"),
    ]
    manifest = write_manifest(tmp_path / "corpus" / "manifest.jsonl", examples)
    lines = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["audio"] == "wav/a.wav"  # relative inside the manifest folder
    assert lines[1]["audio"] == str(outside)  # absolute outside it
    assert lines[0]["text"] == "화가 나요" and "화가" in manifest.read_text(encoding="utf-8")
    back = read_manifest(manifest)
    assert back == examples


def test_manifest_minimal_line_defaults_and_extra_keys(tmp_path: Path):
    _wav(tmp_path / "x" / "u1.wav")
    (tmp_path / "m.jsonl").write_text('{"audio": "x/u1.wav", "label": "fear", "snr": 3}\n\n')
    (ex,) = read_manifest(tmp_path / "m.jsonl")
    assert ex.id == "x/u1" and ex.audio_path == tmp_path / "x" / "u1.wav" and ex.extra == {"snr": 3}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"audio": "a.wav", "label": "anger"', r"line 2: invalid JSON"),
        ('["a.wav", "anger"]', r"line 2: expected a JSON object"),
        ('{"label": "anger"}', r"line 2: missing or empty 'audio'"),
        ('{"audio": "a.wav"}', r"line 2: missing or empty 'label'"),
        ('{"audio": "a.wav", "label": "anger", "split": "dev"}', r"line 2: split 'dev'"),
        ('{"audio": "a.wav", "label": "anger", "speaker": [1]}', r"line 2: field 'speaker'"),
        (
            '{"id": "a", "audio": "a.wav", "label": "anger"}',
            r"line 2: duplicate id 'a' \(first on line 1\)",
        ),
    ],
)
def test_manifest_malformed_line_names_the_line(tmp_path: Path, line: str, message: str):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text('{"id": "a", "audio": "a.wav", "label": "anger"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.jsonl")


def test_manifest_unknown_label(tmp_path: Path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text(
        '{"audio": "a.wav", "label": "anger"}\n{"audio": "a.wav", "id": "b", "label": "angry"}\n'
    )
    with pytest.raises(ManifestError, match=r"line 2: unknown label 'angry'"):
        read_manifest(tmp_path / "m.jsonl")
    assert len(read_manifest(tmp_path / "m.jsonl", labels=None)) == 2
    assert len(read_manifest(tmp_path / "m.jsonl", labels=["anger", "angry"])) == 2


def test_manifest_missing_audio_lists_count_and_first_files(tmp_path: Path):
    lines = [json.dumps({"audio": f"gone{i}.wav", "label": "neutral"}) for i in range(12)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(tmp_path / "m.jsonl")
    text = str(err.value)
    assert text.startswith("12 missing audio file(s)") and "line 1: " in text and "gone0.wav" in text
    assert "and 2 more" in text and "gone11.wav" not in text
    assert len(read_manifest(tmp_path / "m.jsonl", check_audio=False)) == 12


# ---- splits -------------------------------------------------------------------------------------


def _population(n_speakers: int = 20, per_speaker: int = 5) -> list[Example]:
    return [
        Example(
            f"s{s}-{i}",
            Path(f"/x/s{s}-{i}.wav"),
            EMOTIONS[i % 7],
            speaker=f"s{s}",
            call_id=f"c{s}-{i % 2}",
        )
        for s in range(n_speakers)
        for i in range(per_speaker)
    ]


def test_split_by_speaker_is_deterministic_and_speaker_independent():
    data = _population()
    a, b = split_examples(data, seed=1), split_examples(data, seed=1)
    assert [e.split for e in a] == [e.split for e in b]
    assert [e.split for e in split_examples(data, seed=2)] != [e.split for e in a]
    speakers = {s: {e.speaker for e in a if e.split == s} for s in ("train", "val", "test")}
    assert not speakers["train"] & speakers["val"] and not speakers["train"] & speakers["test"]
    assert [len(speakers[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert all(e.split is None for e in data)  # inputs untouched


def test_split_by_call_and_by_utterance():
    data = _population()
    by_call = split_examples(data, seed=0, by="call")
    for call in {e.call_id for e in data}:
        assert len({e.split for e in by_call if e.call_id == call}) == 1
    assert len({e.split for e in split_examples(data, seed=0, by=None)}) == 3


def test_split_respects_explicit_split_and_pulls_the_group_along():
    data = _population()
    data[0].split = "test"  # speaker s0, first utterance
    out = split_examples(data, seed=3)
    assert {e.split for e in out if e.speaker == "s0"} == {"test"}


def test_assign_splits_counts_and_tiny_inputs():
    got = assign_splits([f"k{i}" for i in range(10)], seed=5)
    assert sorted(Counter(got.values()).values()) == [1, 1, 8]
    assert set(assign_splits(["a", "b", "c"], seed=0).values()) == {"train", "val", "test"}
    assert set(assign_splits(["a", "b"], seed=0, ratios=(0.5, 0.5)).values()) == {"train", "test"}
    with pytest.raises(ValueError):
        assign_splits(["a"], seed=0, ratios=(1.0,))


# ---- audio --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtype", "sr", "channels", "fmt"),
    [
        ("PCM_U8", 16_000, 1, "WAV"),
        ("PCM_24", 16_000, 1, "WAV"),
        ("FLOAT", 16_000, 1, "WAV"),
        ("PCM_16", 16_000, 2, "WAV"),
        ("PCM_16", 8_000, 1, "WAV"),
        ("PCM_16", 44_100, 2, "WAV"),
        ("PCM_24", 22_050, 1, "FLAC"),
    ],
)
def test_load_audio_formats_to_16k_mono_float32(tmp_path: Path, subtype: str, sr: int, channels: int, fmt: str):
    tone = _tone(1.5, sr, freq=440.0)
    data = np.stack([tone, tone * 0.5], axis=1) if channels == 2 else tone
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, sr, subtype=subtype, format=fmt)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert x.size == int(np.ceil(tone.size * 16_000 / sr))
    assert abs(x.size / 16_000 - 1.5) < 1e-3
    assert _peak_hz(x, 16_000) == pytest.approx(440.0, abs=2.0)
    expected_amp = 0.5 * (0.75 if channels == 2 else 1.0)  # stereo: mean of 0.5 and 0.25
    assert np.max(np.abs(x[2000:-2000])) == pytest.approx(expected_amp, rel=0.03)


def test_load_audio_keeps_native_rate_when_asked(tmp_path: Path):
    sf.write(tmp_path / "a.wav", _tone(0.5, 8000), 8000)
    assert load_audio(tmp_path / "a.wav", target_sr=None).size == 4000


def test_load_audio_errors(tmp_path: Path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(tmp_path / "corrupt.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioError):
        load_audio(tmp_path / "zero.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.int16), 16_000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(tmp_path / "empty.wav")
    sf.write(
        tmp_path / "nan.wav",
        np.array([0.0, np.nan, 0.1], dtype=np.float32),
        16_000,
        subtype="FLOAT",
    )
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


@pytest.mark.parametrize(("sr_in", "sr_out"), [(8000, 16000), (22050, 16000), (44100, 8000), (16000, 8000)])
def test_numpy_resampler_matches_scipy_and_preserves_frequency(sr_in: int, sr_out: int):
    pytest.importorskip("scipy")
    tone = _tone(0.7, sr_in, freq=1000.0)
    x = tone + 0.3 * np.random.default_rng(0).standard_normal(tone.size).astype(np.float32)
    a = resample(x, sr_in, sr_out, backend="numpy")
    b = resample(x, sr_in, sr_out, backend="scipy")
    assert a.shape == b.shape and np.max(np.abs(a - b)) < 1e-5
    clean = resample(tone, sr_in, sr_out, backend="numpy")
    assert _peak_hz(clean, sr_out) == pytest.approx(1000.0, abs=3.0)


def test_resampler_removes_content_above_the_new_nyquist():
    x = _tone(1.0, 16_000, freq=6000.0)  # above 4 kHz: must vanish at 8 kHz, not alias to 2 kHz
    y = resample(x, 16_000, 8_000, backend="numpy")
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 1e-3


@pytest.mark.parametrize("gain_db", [-40.0, -20.0, 0.0, 12.0])
def test_normalise_level_brings_the_active_speech_to_the_target(gain_db: float):
    speech = _tone(1.0, 16_000, freq=300.0) * 0.3
    speech[4000:9000] = 0.0  # a pause: not part of the active level
    x = (speech * 10 ** (gain_db / 20)).astype(np.float32)
    y = normalise_level(x, 16_000, -26.0)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert active_rms_db(y, 16_000) == pytest.approx(-26.0, abs=0.01)
    assert np.all(y[4000:9000] == 0.0)
    # at most 40 dB of gain: a near-silent clip is not raised into loud noise; silence stays silence
    faint = x * np.float32(10 ** (-90 / 20))
    assert active_rms_db(normalise_level(faint, 16_000, -26.0), 16_000) == pytest.approx(
        active_rms_db(faint, 16_000) + 40.0, abs=0.01
    )
    assert np.all(normalise_level(np.zeros(800, np.float32), 16_000, -26.0) == 0.0)


@pytest.mark.parametrize("f0", [95.0, 180.0, 310.0])
def test_estimate_f0_on_a_harmonic_signal(f0: float):
    sr = 8000
    t = np.arange(sr) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(2, 9))  # missing fundamental
    est = estimate_f0(x, sr)
    voiced = est[est > 0]
    assert voiced.size > 0.9 * est.size
    assert np.median(voiced) == pytest.approx(f0, rel=0.01)
    assert np.all(estimate_f0(np.zeros(sr), sr) == 0)
