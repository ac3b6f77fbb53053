"""Corpus loaders (training.data.corpora), text-only manifest lines and ``emotion data``.

Fixtures are generated here, in each corpus's published layout, into ``tmp_path`` (audio: a short
sine). Tests on the real corpora read ``<repo>/../shared/datasets`` (or ``$EMOTION_DATASETS``) and
skip when it is absent; nothing of them is ever copied into the repository.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shared.settings import EMOTIONS
from training.data.corpora import (
    CORPORA,
    load_crema_d,
    load_dailydialog,
    load_goemotions,
    load_meld,
    load_ravdess,
    load_tess,
)
from training.data.manifest import Example, ManifestError, read_manifest, write_manifest

DATASETS = Path(
    os.environ.get("EMOTION_DATASETS") or Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
)


def _clip(path: Path, seconds: float = 0.05, sr: int = 16_000) -> Path:
    """A short sine in ``path``'s format (.wav or .flac)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def _labels_ok(examples: list[Example]) -> None:
    assert examples and all(e.label in EMOTIONS for e in examples)
    assert len({e.id for e in examples}) == len(examples)


# ---- RAVDESS ------------------------------------------------------------------------------------


@pytest.fixture
def ravdess(tmp_path: Path) -> Path:
    """Two actors; every emotion at normal intensity, statement 1 and 2 (repetition 1); calm also
    strong; a song clip, a stray file and a name with an emotion code out of range."""
    root = tmp_path / "ravdess"
    for actor in ("01", "02"):
        for emotion in range(1, 9):
            for statement in ("01", "02"):
                _clip(root / f"Actor_{actor}" / f"03-01-{emotion:02d}-01-{statement}-01-{actor}.flac")
        _clip(root / f"Actor_{actor}" / f"03-01-02-02-01-02-{actor}.wav")  # calm, strong, .wav
    _clip(root / "Actor_01" / "03-02-03-01-01-01-01.flac")  # song
    _clip(root / "Actor_01" / "notes.wav")
    _clip(root / "Actor_02" / "03-01-09-01-01-01-02.flac")  # emotion 09 does not exist
    return root


def test_ravdess_parses_names_and_drops_calm_by_default(ravdess: Path, caplog):
    with caplog.at_level(logging.INFO, "training.data.corpora"):
        examples = load_ravdess(ravdess)
    _labels_ok(examples)
    assert len(examples) == 2 * 7 * 2  # 2 actors x 7 emotions x 2 statements
    assert Counter(e.label for e in examples) == {label: 4 for label in EMOTIONS}
    assert all(e.split is None and e.language == "en" and e.audio_path.is_file() for e in examples)
    (fear,) = [e for e in examples if e.id == "ravdess-03-01-06-01-02-01-02"]
    assert fear.label == "fear" and fear.speaker == "ravdess-02" and fear.text == "Dogs are sitting by the door"
    assert fear.extra == {
        "actor": 2,
        "gender": "female",
        "emotion": "fearful",
        "intensity": "normal",
        "statement": 2,
        "repetition": 1,
        "modality": 3,
    }
    assert {e.extra["gender"] for e in examples if e.speaker == "ravdess-01"} == {"male"}
    log = caplog.text
    assert "dropped 6 calm" in log and "dropped 1 song clip" in log
    assert "skipped 2 file(s) not named MM-VV-EE-II-SS-RR-AA" in log
    assert "notes.wav" in log and "03-01-09-01-01-01-02.flac" in log


def test_ravdess_calm_as_neutral(ravdess: Path):
    examples = load_ravdess(ravdess, calm="neutral")
    calm = [e for e in examples if e.extra["emotion"] == "calm"]
    assert len(examples) == 28 + 6 and len(calm) == 6 and {e.label for e in calm} == {"neutral"}
    assert {e.extra["intensity"] for e in calm} == {"normal", "strong"}
    with pytest.raises(ValueError, match="calm must be"):
        load_ravdess(ravdess, calm="keep")  # type: ignore[arg-type]


def test_audio_loaders_refuse_empty_folders_and_lfs_pointers(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no .wav/.flac files"):
        load_ravdess(tmp_path / "empty")
    with pytest.raises(ManifestError, match="not a folder"):
        load_tess(tmp_path / "absent")
    wav = tmp_path / "crema" / "AudioWAV" / "1001_DFA_ANG_XX.wav"
    wav.parent.mkdir(parents=True)
    wav.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    with pytest.raises(ManifestError, match="Git LFS pointers"):
        load_crema_d(tmp_path / "crema")
    (tmp_path / "odd").mkdir()
    _clip(tmp_path / "odd" / "hello.wav")
    with pytest.raises(ManifestError, match="no usable clip"):
        load_ravdess(tmp_path / "odd")


# ---- CREMA-D ------------------------------------------------------------------------------------


def test_crema_d_published_layout(tmp_path: Path, caplog):
    root = tmp_path / "CREMA-D"
    names = [
        "1001_DFA_ANG_XX",
        "1001_IEO_HAP_HI",
        "1001_IEO_SAD_LO",
        "1002_TIE_NEU_XX",
        "1002_WSI_FEA_XX",
        "1002_ITH_DIS_MD",
    ]
    for name in names:
        _clip(root / "AudioWAV" / f"{name}.wav")
    _clip(root / "AudioWAV" / "1002_XYZ_ANG_XX.wav")  # unknown sentence code
    _clip(root / "AudioWAV" / "1002_DFA_CAL_XX.wav")  # unknown emotion
    (root / "VideoDemographics.csv").write_text(
        '"ActorID","Age","Sex","Race","Ethnicity"\n1001,51,"Male","Caucasian","Not Hispanic"\n'
        '1002,21,"Female","Caucasian","Not Hispanic"\n'
    )
    with caplog.at_level(logging.WARNING, "training.data.corpora"):
        examples = load_crema_d(root)
    _labels_ok(examples)
    assert [e.id for e in examples] == [f"crema-d-{n}" for n in sorted(names)]
    by_id = {e.id.removeprefix("crema-d-"): e for e in examples}
    e = by_id["1001_DFA_ANG_XX"]
    assert (e.label, e.text, e.speaker) == ("anger", "Don't forget a jacket", "crema-d-1001")
    assert e.extra == {
        "actor": 1001,
        "sentence": "DFA",
        "emotion": "ANG",
        "intensity": "unspecified",
        "gender": "male",
        "age": 51,
    }
    assert by_id["1001_IEO_HAP_HI"].label == "happiness" and by_id["1001_IEO_HAP_HI"].extra["intensity"] == "high"
    assert by_id["1002_ITH_DIS_MD"].text == "I think I have a doctor's appointment"
    assert by_id["1002_WSI_FEA_XX"].extra["gender"] == "female"
    assert "skipped 2 file(s)" in caplog.text and "1002_XYZ_ANG_XX.wav" in caplog.text
    # the AudioWAV folder itself also works (no demographics next to it: no gender)
    assert len(load_crema_d(root / "AudioWAV")) == 6


# ---- TESS ---------------------------------------------------------------------------------------


def test_tess_published_layout_with_its_spellings(tmp_path: Path, caplog):
    root = tmp_path / "TESS Toronto emotional speech set data"
    files = {
        "OAF_angry/OAF_back_angry.wav": "anger",
        "OAF_disgust/OAF_back_disgust.wav": "disgust",
        "OAF_Fear/OAF_back_fear.wav": "fear",
        "OAF_happy/OAF_back_happy.wav": "happiness",
        "OAF_neutral/OAF_back_neutral.wav": "neutral",
        "OAF_Pleasant_surprise/OAF_back_ps.wav": "surprise",
        "OAF_Sad/OAF_back_sad.wav": "sadness",
        "YAF_pleasant_surprised/YAF_bite_pleasant_surprised.wav": "surprise",
        "YAF_sad/YAF_bite_Sad.wav": "sadness",
    }
    for rel in files:
        _clip(root / rel)
    _clip(root / "YAF_sad" / "YAF_bite_bored.wav")
    with caplog.at_level(logging.WARNING, "training.data.corpora"):
        examples = load_tess(root)
    _labels_ok(examples)
    got = {e.audio_path.relative_to(root).as_posix(): e for e in examples}
    assert {k: e.label for k, e in got.items()} == files
    e = got["OAF_Pleasant_surprise/OAF_back_ps.wav"]
    assert (e.text, e.speaker, e.language) == ("Say the word back", "tess-OAF", "en")
    assert e.extra == {"word": "back", "emotion": "ps", "gender": "female", "age": 64}
    assert got["YAF_sad/YAF_bite_Sad.wav"].speaker == "tess-YAF"
    assert "YAF_bite_bored.wav" in caplog.text


# ---- MELD ---------------------------------------------------------------------------------------

_MELD_HEADER = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]


def _meld_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")  # the release's CRLF, quotes where needed
        writer.writerow(_MELD_HEADER)
        writer.writerows(rows)


def test_meld_splits_quoting_and_labels(tmp_path: Path, caplog):
    root = tmp_path / "meld"
    _meld_csv(
        root / "train_sent_emo.csv",
        [
            [
                "1",
                "Well, “hello” there, you’re late…",
                "Alice",
                "joy",
                "positive",
                "0",
                "0",
                "1",
                "2",
                "00:00:01,000",
                "00:00:02,000",
            ],
            ["2", 'She said "no,\nnever" twice', "Bob", "anger", "negative", "0", "1", "1", "2", "0", "0"],
            ["3", "Hm.", "Alice", "boredom", "neutral", "0", "2", "1", "2", "0", "0"],
            ["3", "Same key again", "Alice", "neutral", "neutral", "0", "1", "1", "2", "0", "0"],
        ],
    )
    _meld_csv(root / "dev_sent_emo.csv", [["1", "Oh no.", "Carol", "fear", "negative", "0", "0", "3", "4", "0", "0"]])
    _meld_csv(root / "test_sent_emo.csv", [["1", "Eww!", "Dan", "disgust", "negative", "5", "3", "3", "4", "0", "0"]])
    with caplog.at_level(logging.WARNING, "training.data.corpora"):
        examples = load_meld(root)
    _labels_ok(examples)
    assert [(e.id, e.split, e.label) for e in examples] == [
        ("meld-train-dia0_utt0", "train", "happiness"),
        ("meld-train-dia0_utt1", "train", "anger"),
        ("meld-val-dia0_utt0", "val", "fear"),
        ("meld-test-dia5_utt3", "test", "disgust"),
    ]
    first, second = examples[:2]
    assert first.text == "Well, “hello” there, you’re late…" and second.text == 'She said "no,\nnever" twice'
    assert first.audio_path is None and first.speaker == "Alice" and first.call_id == "meld-train-dia0"
    assert first.extra == {
        "dialogue": 0,
        "turn": 0,
        "emotion": "joy",
        "sentiment": "positive",
        "season": "1",
        "episode": "2",
        "start": "00:00:01,000",
        "end": "00:00:02,000",
    }
    assert "skipped 2 row(s) of train_sent_emo.csv" in caplog.text and "'boredom'" in caplog.text


def test_meld_non_utf8_file_is_read_as_cp1252_with_a_warning(tmp_path: Path, caplog):
    _meld_csv(
        tmp_path / "train_sent_emo.csv",
        [["1", "You’re", "Joey", "neutral", "neutral", "0", "0", "1", "1", "0", "0"]],
        encoding="cp1252",
    )
    with caplog.at_level(logging.WARNING, "training.data.corpora"):
        (ex,) = load_meld(tmp_path)
    assert ex.text == "You’re" and "not UTF-8" in caplog.text and "no val split" in caplog.text


# ---- DailyDialog --------------------------------------------------------------------------------


def _dailydialog(root: Path, split: str, dialogues: list[tuple[list[str], list[int]]]) -> None:
    folder = root / split
    folder.mkdir(parents=True)
    (folder / f"dialogues_{split}.txt").write_text(
        "".join(" __eou__ ".join(turns) + " __eou__\n" for turns, _ in dialogues), encoding="utf-8"
    )
    (folder / f"dialogues_emotion_{split}.txt").write_text(
        "".join(" ".join(map(str, codes)) + " \n" for _, codes in dialogues)
    )
    (folder / f"dialogues_act_{split}.txt").write_text("".join(" ".join("2" * len(t)) + " \n" for t, _ in dialogues))


def test_dailydialog_turns_speakers_and_dedupe(tmp_path: Path, caplog):
    root = tmp_path / "dailydialog"
    a = (["Hi , Tom !", "Hello .", "Great news !"], [0, 0, 4])
    b = (["I 'm scared .", "Why ?"], [3, 6])
    c = (["That 's disgusting .", "Sorry ."], [2, 5])
    bad = (["One .", "Two ."], [0])  # one label for two utterances
    _dailydialog(root, "train", [a, b, a, bad])
    _dailydialog(root, "validation", [b, c])
    _dailydialog(root, "test", [(["Go away !"], [1]), c])
    with caplog.at_level(logging.INFO, "training.data.corpora"):
        examples = load_dailydialog(root)
    _labels_ok(examples)
    assert [e.id for e in examples] == [
        "dailydialog-train-00001-t00",
        "dailydialog-train-00001-t01",
        "dailydialog-train-00001-t02",
        "dailydialog-train-00002-t00",
        "dailydialog-train-00002-t01",
        "dailydialog-val-00002-t00",
        "dailydialog-val-00002-t01",
        "dailydialog-test-00001-t00",
    ]
    first = examples[:3]
    assert [e.speaker for e in first] == [
        "dailydialog-train-00001-A",
        "dailydialog-train-00001-B",
        "dailydialog-train-00001-A",
    ]
    assert [e.label for e in first] == ["neutral", "neutral", "happiness"] and first[0].text == "Hi , Tom !"
    assert first[2].extra == {"dialogue": 1, "turn": 2, "act": "question"} and first[0].audio_path is None
    assert [e.label for e in examples[3:]] == ["fear", "surprise", "disgust", "sadness", "anger"]
    log = caplog.text
    assert "dropped 1 train dialogue(s) already seen earlier in the same split" in log
    assert "dropped 1 validation dialogue(s) already seen in train" in log
    assert "dropped 1 test dialogue(s) already seen in validation" in log
    assert "dialogues_train.txt:4" in log
    everything = load_dailydialog(root, dedupe=False)
    assert Counter(e.split for e in everything) == {"train": 8, "val": 4, "test": 3}


# ---- GoEmotions ---------------------------------------------------------------------------------

_GO_NAMES = ["admiration", "anger", "annoyance", "fear", "grief", "joy", "surprise", "neutral"]


def _goemotions(root: Path, rows: dict[str, list[tuple[str, str, str]]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "emotions.txt").write_text("\n".join(_GO_NAMES))  # no trailing newline, like the release
    (root / "ekman_mapping.json").write_text(
        json.dumps(
            {
                "anger": ["anger", "annoyance"],
                "fear": ["fear"],
                "joy": ["joy", "admiration"],
                "sadness": ["grief"],
                "surprise": ["surprise"],
            }
        )
    )
    for name, lines in rows.items():
        with (root / name).open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(lines)


def test_goemotions_multi_label_rule(tmp_path: Path, caplog):
    ids = {n: str(i) for i, n in enumerate(_GO_NAMES)}
    _goemotions(
        tmp_path,
        {
            "train.tsv": [
                ('So [NAME] said "fine"\tand left', ids["neutral"], "c1"),  # quoted field with a tab
                ("Grr, stop it", f"{ids['anger']},{ids['annoyance']}", "c2"),  # two labels, one class
                ("Nice! Thanks", f"{ids['joy']},{ids['neutral']}", "c3"),  # joy + neutral: dropped
                ("Wow, sad", f"{ids['surprise']},{ids['grief']}", "c4"),  # two classes: dropped
                ("I love it", f"{ids['admiration']},{ids['joy']}", "c5"),
                ("broken row", "99", "c6"),  # unknown label id
            ],
            "dev.tsv": [("Scary stuff", ids["fear"], "d1")],
            "test.tsv": [("RIP", ids["grief"], "t1")],
        },
    )
    with caplog.at_level(logging.INFO, "training.data.corpora"):
        examples = load_goemotions(tmp_path)
    _labels_ok(examples)
    assert [(e.id, e.label, e.split) for e in examples] == [
        ("goemotions-c1", "neutral", "train"),
        ("goemotions-c2", "anger", "train"),
        ("goemotions-c5", "happiness", "train"),
        ("goemotions-d1", "fear", "val"),
        ("goemotions-t1", "sadness", "test"),
    ]
    assert examples[0].text == 'So [NAME] said "fine"\tand left' and examples[0].audio_path is None
    assert examples[1].extra == {"emotions": ["anger", "annoyance"]} and examples[1].speaker is None
    assert "dropped 2 row(s) of train.tsv whose labels map to several classes" in caplog.text
    assert "dropped 0 row(s) of dev.tsv" in caplog.text
    assert "skipped 1 malformed row(s) of train.tsv" in caplog.text
    (tmp_path / "ekman_mapping.json").unlink()
    with pytest.raises(ManifestError, match="ekman_mapping.json is missing"):
        load_goemotions(tmp_path)


def test_text_loaders_need_at_least_one_split_file(tmp_path: Path):
    for load in (load_meld, load_dailydialog, load_goemotions):
        with pytest.raises(ManifestError, match="none of"):
            load(tmp_path)


# ---- the manifest with text-only lines ----------------------------------------------------------


def test_round_trip_with_a_text_only_line(tmp_path: Path):
    wav = _clip(tmp_path / "corpus" / "a.wav")
    examples = [
        Example("a", wav, "anger", text="Kids are talking by the door", speaker="ravdess-01", language="en"),
        Example(
            "meld-train-dia0_utt0",
            None,
            "happiness",
            text="Hi!",
            speaker="Alice",
            split="train",
            call_id="meld-train-dia0",
            extra={"emotion": "joy"},
        ),
    ]
    manifest = write_manifest(tmp_path / "corpus" / "m.jsonl", examples)
    lines = [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["audio"] == "a.wav" and lines[1]["audio"] is None
    assert read_manifest(manifest) == examples  # check_audio skips the text-only line


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "t", "audio": null, "label": "anger"}', r"line 1: 'audio' is null and there is no 'text'"),
        ('{"id": "t", "audio": null, "label": "anger", "text": "  "}', r"line 1: 'audio' is null and there is no"),
        ('{"audio": null, "label": "anger", "text": "hi"}', r"line 1: a text-only line .* needs an 'id'"),
        ('{"id": "t", "label": "anger", "text": "hi"}', r"line 1: missing or empty 'audio' field"),
    ],
)
def test_manifest_rejects_lines_with_neither_audio_nor_text(tmp_path: Path, line: str, message: str):
    (tmp_path / "m.jsonl").write_text(line + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.jsonl")


def test_manifest_still_checks_audio_files_beside_text_only_lines(tmp_path: Path):
    (tmp_path / "m.jsonl").write_text(
        '{"id": "t", "audio": null, "label": "anger", "text": "hi"}\n{"audio": "gone.wav", "label": "fear"}\n'
    )
    with pytest.raises(ManifestError, match=r"(?s)1 missing audio file\(s\).*line 2: .*gone.wav"):
        read_manifest(tmp_path / "m.jsonl")


def test_publishing_says_so_for_text_only_lines(tmp_path: Path):
    from emotion.publish import AudioSourceError, manifest_sources
    from training.features import example_key

    # features key a text-only example by its id, language and text (tests/unit/test_training.py)
    assert example_key(Example("meld-x", None, "anger", text="hi")) != example_key(
        Example("meld-x", None, "anger", text="ho")
    )
    (tmp_path / "m.jsonl").write_text('{"id": "t", "audio": null, "label": "anger", "text": "hi"}\n')
    (source,) = manifest_sources(tmp_path / "m.jsonl", None, None)
    with pytest.raises(AudioSourceError, match="text-only line"):
        source.load()


# ---- the registry and the command line ----------------------------------------------------------


def test_registry_names_every_loader():
    assert list(CORPORA) == ["ravdess", "crema-d", "tess", "meld", "dailydialog", "goemotions"]
    assert {c.name for c in CORPORA.values() if c.kind == "text"} == {"meld", "dailydialog", "goemotions"}
    assert CORPORA["ravdess"].options == ("calm",)


def test_cli_data_prepare_and_list(ravdess: Path, tmp_path: Path, capsys):
    from emotion.cli import main

    out = tmp_path / "out" / "ravdess.jsonl"
    home = ["--home", str(tmp_path / "home")]
    assert main([*home, "data", "prepare", "ravdess", str(ravdess), "--out", str(out), "--calm", "neutral"]) == 0
    printed = capsys.readouterr().out
    assert "ravdess: 34 speech utterances" in printed
    table = [line.split() for line in printed.splitlines()[1:]]
    assert table[0] == ["label", "(none)", "total"] and ["neutral", "10", "10"] in table
    assert table[-1] == ["total", "34", "34"]
    examples = read_manifest(out)
    assert len(examples) == 34 and all(e.audio_path.is_relative_to(ravdess) for e in examples)

    assert main([*home, "data", "prepare", "ravdess", str(ravdess), "--out", str(out), "--limit", "5"]) == 0
    assert len(read_manifest(out)) == 5
    assert main([*home, "data", "prepare", "meld", str(ravdess), "--out", str(out), "--calm", "drop"]) == 2
    assert main([*home, "data", "prepare", "tess", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert main([*home, "data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in CORPORA)


def test_cli_data_prepare_help_explains(capsys):
    from emotion.cli import main

    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    text = capsys.readouterr().out
    assert "--calm {drop,neutral}" in text and "text-only" in text and "several classes" in text


# ---- the real corpora (skipped when /work/shared/datasets is absent) ----------------------------


def _real(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real corpus not available: {path} (set EMOTION_DATASETS to the datasets folder)")
    return path


def test_real_ravdess():
    root = _real("ravdess")
    dropped = load_ravdess(root)
    assert len(dropped) == 936 and len({e.speaker for e in dropped}) == 18
    assert Counter(e.label for e in dropped) == {**{k: 144 for k in EMOTIONS}, "neutral": 72}
    assert Counter(e.extra["gender"] for e in dropped) == {"male": 468, "female": 468}
    kept = load_ravdess(root, calm="neutral")
    assert len(kept) == 1080 and Counter(e.label for e in kept)["neutral"] == 216


def test_real_meld():
    examples = load_meld(_real("meld"))
    assert Counter(e.split for e in examples) == {"train": 9989, "val": 1109, "test": 2610}
    assert Counter(e.label for e in examples) == {
        "anger": 1607,
        "disgust": 361,
        "fear": 358,
        "happiness": 2308,
        "neutral": 6436,
        "sadness": 1002,
        "surprise": 1636,
    }
    assert {s: len({e.call_id for e in examples if e.split == s}) for s in ("train", "val", "test")} == {
        "train": 1038,
        "val": 114,
        "test": 280,
    }


def test_real_dailydialog():
    root = _real("dailydialog")
    published = load_dailydialog(root, dedupe=False)
    assert Counter(e.split for e in published) == {"train": 87170, "val": 8069, "test": 7740}
    assert Counter(e.label for e in published) == {
        "neutral": 85572,
        "anger": 1022,
        "disgust": 353,
        "fear": 174,
        "happiness": 12885,
        "sadness": 1150,
        "surprise": 1823,
    }
    deduped = load_dailydialog(root)
    assert Counter(e.split for e in deduped) == {"train": 83046, "val": 7500, "test": 7105}
    dialogues = {s: {e.call_id for e in deduped if e.split == s} for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in dialogues.items()} == {"train": 10549, "val": 927, "test": 900}


def test_real_goemotions():
    examples = load_goemotions(_real("goemotions"))
    assert Counter(e.split for e in examples) == {"train": 39555, "val": 4946, "test": 4968}
    train = Counter(e.label for e in examples if e.split == "train")
    assert train == {
        "anger": 4293,
        "disgust": 498,
        "fear": 541,
        "happiness": 15216,
        "neutral": 12823,
        "sadness": 2326,
        "surprise": 3858,
    }


def test_mix_joins_manifests_caps_an_input_by_whole_calls_and_refuses_clashing_ids(tmp_path: Path, capsys):
    import numpy as np
    import soundfile as sf

    from emotion.cli import main as emotion
    from training.data.manifest import read_manifest, write_manifest
    from training.data.prepare import mix_manifests

    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16_000)
    speech = write_manifest(tmp_path / "speech.jsonl", [Example("s1", tmp_path / "a.wav", "anger", speaker="x")])
    dialogues = [
        Example(f"d{c}-{t}", None, "neutral", text=f"turn {t}", call_id=f"dia{c}", split=split)
        for c, split in enumerate(["train"] * 8 + ["test"] * 2)
        for t in range(5)
    ]
    text = write_manifest(tmp_path / "text.jsonl", dialogues)
    mixed = mix_manifests([speech, text], {"text": 20}, seed=3)
    assert mixed[0].id == "s1" and mixed[0].audio_path == tmp_path / "a.wav"
    taken = [ex for ex in mixed if ex.audio_path is None]
    calls = Counter(ex.call_id for ex in taken)
    assert len(taken) == 20 and set(calls.values()) == {5}  # whole dialogues
    assert Counter(ex.split for ex in taken) == {"train": 15, "test": 5}  # each split's share, in whole calls
    assert mix_manifests([speech, text], {"text": 20}, seed=3) == mixed  # seeded

    out = tmp_path / "mix" / "all.jsonl"
    assert emotion(["data", "mix", str(speech), str(text), "--take", "text=20", "--seed", "3", "--out", str(out)]) == 0
    assert "mixed 2 manifests: 21 utterances" in capsys.readouterr().out
    assert [ex.id for ex in read_manifest(out)] == [ex.id for ex in mixed]
    with pytest.raises(ManifestError, match=r"1 id\(s\) already in .*speech.jsonl, e.g. 's1'"):
        mix_manifests([speech, speech])
    with pytest.raises(ManifestError, match="--take names no input: nope"):
        mix_manifests([speech], {"nope": 1})


# ---- a recipe's corpora (data.corpora) ---------------------------------------------------------


def test_recipe_corpora_are_read_in_place_capped_and_mixed_once(ravdess: Path, tmp_path: Path):
    from shared.settings import load_settings
    from training.train import ConfigError, TrainConfig, corpora_manifest

    datasets = ravdess.parent
    dialogues = [([f"hello {d}", "hi", "bye"], [0, 4, 1]) for d in range(10)]
    _dailydialog(datasets / "dd", "train", dialogues)
    _dailydialog(datasets / "dd", "validation", [(["well then", "fine", "ok"], [0, 0, 0])])
    settings = load_settings(home=tmp_path / "home")
    config = TrainConfig.from_yaml("default", [f"data.datasets={datasets}"])
    config.data.corpora = [
        {"name": "ravdess", "path": "ravdess", "calm": "neutral"},
        {"name": "dailydialog", "path": "dd", "take": 6},
    ]
    manifest = corpora_manifest(settings, config.data, progress=False)
    examples = read_manifest(manifest)
    speech = [e for e in examples if e.audio_path is not None]
    text = [e for e in examples if e.audio_path is None]
    assert len(speech) == 2 * 8 * 2 + 2 and all(Path(e.audio_path).is_relative_to(ravdess) for e in speech)
    assert sum(e.label == "neutral" for e in speech) == 2 * 2 * 2 + 2  # calm -> neutral, as the entry asks
    assert len(text) == 6 and len({e.call_id for e in text}) == 2  # a whole dialogue from each split
    assert manifest.parent.parent == settings.home / "corpora"
    assert all(e.split for e in examples)  # written with the split training uses (RAVDESS: by actor)
    assert all(len({e.split for e in speech if e.speaker == s}) == 1 for s in {e.speaker for e in speech})
    manifest.write_text("")  # the mix is made once per recipe: an unchanged recipe reads it back
    assert corpora_manifest(settings, config.data, progress=False) == manifest and manifest.read_text() == ""
    config.data.corpora[1]["take"] = 3
    assert corpora_manifest(settings, config.data, progress=False) != manifest  # another recipe, another mix

    for corpora, message in [
        ([{"name": "ravdes", "path": "ravdess"}], "unknown corpus"),
        ([{"name": "ravdess"}], "needs a path"),
        ([{"name": "ravdess", "path": "ravdess", "limit": 3}], "unknown option 'limit'"),
        ([{"name": "dailydialog", "path": "dd", "take": 0}], "take must be a positive integer"),
        ([{"name": "meld", "path": "nowhere"}], "no corpus folder at"),
        ([{"name": "synthetic", "voices": 3}], "unknown option 'voices'"),
    ]:
        config.data.corpora = corpora
        with pytest.raises(ConfigError, match=message):
            corpora_manifest(settings, config.data, progress=False)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (deploy/local/install-system.sh)")
def test_recipe_speaks_a_sample_of_a_text_corpus_beside_its_text(ravdess: Path, tmp_path: Path):
    from shared.settings import load_settings
    from training.train import ConfigError, TrainConfig, corpora_manifest

    datasets = ravdess.parent
    _dailydialog(
        datasets / "dd", "train", [([f"hello number {d}", "hi there", "goodbye"], [0, 4, 1]) for d in range(4)]
    )
    _dailydialog(datasets / "dd", "test", [(["well then", "that is fine", "ok"], [0, 0, 0])])
    settings = load_settings(home=tmp_path / "home")
    config = TrainConfig.from_yaml("default", [f"data.datasets={datasets}", "data.workers=1"])
    config.data.corpora = [{"name": "dailydialog", "path": "dd", "take": 9, "spoken": 4}]
    examples = read_manifest(corpora_manifest(settings, config.data, progress=False))
    text = {e.id: e for e in examples if e.audio_path is None}
    flat = [e for e in examples if e.audio_path is not None]
    assert len(text) == 9 and len(flat) == 4  # the cap first, then a sample of what it kept, spoken
    for e in flat:  # each spoken line is its text line, with audio, under its own id and in its split
        line = text[e.extra["text_id"]]
        assert e.id == f"{line.id}-flat" and (e.text, e.label, e.split, e.speaker) == (
            line.text,
            line.label,
            line.split,
            line.speaker,
        )
        assert sf.info(str(e.audio_path)).duration > 0.3 and e.audio_path.is_relative_to(settings.home / "corpora")
    config.data.corpora[0]["spoken"] = 2  # another sample, another mix
    again = read_manifest(corpora_manifest(settings, config.data, progress=False))
    assert sum(e.audio_path is not None for e in again) == 2

    for corpora, message in [
        ([{"name": "ravdess", "path": "ravdess", "spoken": 3}], "spoken is for text corpora, ravdess has audio"),
        ([{"name": "dailydialog", "path": "dd", "spoken": 0}], "spoken must be a positive integer"),
        ([{"name": "synthetic", "spoken": 3}], "unknown option 'spoken'"),
    ]:
        config.data.corpora = corpora
        with pytest.raises(ConfigError, match=message):
            corpora_manifest(settings, config.data, progress=False)


def test_corpus_of_reads_the_loaders_id_prefixes():
    from training.data.corpora import corpus_of

    assert corpus_of("ravdess-03-01-05-01-01-01-07") == "ravdess"
    assert corpus_of("crema-d-1001_DFA_ANG_XX") == "crema-d" and corpus_of("meld-test-dia3_utt0") == "meld"
    assert corpus_of("dailydialog-train-00001-t00") == "dailydialog" and corpus_of("goemotions-eebbqej") == "goemotions"
    assert corpus_of("en-call0001-t00") is None and corpus_of("ravdess") is None


def test_default_recipe_reads_the_shared_datasets_by_name(capsys):
    from training.train import RECIPES_DIR, ConfigError, TrainConfig

    config = TrainConfig.from_yaml("default")
    assert config.recipe == str(RECIPES_DIR / "default.yaml")
    assert {c["name"] for c in config.data.corpora} == {"ravdess", "meld", "dailydialog", "goemotions", "synthetic"}
    assert config.model.fusion["speaker_norm"] is True and config.data.speech_layer == 3
    assert config.data.channel == "phone-voices" and config.train.text_dropout > 0 and config.train.speech_dropout > 0
    with pytest.raises(ConfigError, match="the package's recipes: comparison, default, proposed"):
        TrainConfig.from_yaml("defualt")
