"""Public emotion corpora read from their published layouts into :class:`Example` objects.

Every loader takes the corpus folder as published and returns examples whose ``label`` is one of
the seven common classes :data:`~shared.settings.EMOTIONS`; what does not map onto them is dropped
and logged (with the reason and the count). :data:`CORPORA` is the registry ``emotion data
prepare NAME SRC --out manifest.jsonl`` uses (:mod:`training.data.prepare`).

* ``ravdess`` (speech): ``Actor_NN/MM-VV-EE-II-SS-RR-AA.{wav,flac}`` (:func:`load_ravdess`);
* ``crema-d`` (speech): ``AudioWAV/1001_DFA_ANG_XX.wav`` + ``VideoDemographics.csv`` (:func:`load_crema_d`);
* ``tess`` (speech): ``OAF_angry/OAF_back_angry.wav`` ... (:func:`load_tess`);
* ``meld`` (text): ``{train,dev,test}_sent_emo.csv`` (:func:`load_meld`);
* ``dailydialog`` (text): ``{train,validation,test}/dialogues{,_emotion,_act}_<split>.txt``
  (:func:`load_dailydialog`);
* ``goemotions`` (text): ``{train,dev,test}.tsv``, ``emotions.txt``, ``ekman_mapping.json``
  (:func:`load_goemotions`).

Text corpora give **text-only** examples (``audio_path`` ``None``, ``"audio": null`` in the
manifest): feature extraction gives them the text branch's input only (no speech), so they
train beside spoken utterances (:mod:`training.features`); ``emotion publish`` refuses them.

**Splits.** MELD, DailyDialog and GoEmotions keep their official train / dev(val) / test split;
dialogues never straddle splits (DailyDialog after de-duplication, below). RAVDESS, TESS and
CREMA-D have no official split: ``split`` is left empty and ``emotion train`` assigns a
speaker-independent one (:func:`~training.data.manifest.split_examples` with ``by="speaker"``, the
default ``data.split_by``). TESS has only two speakers, so a speaker-independent split there is
one speaker against the other.

**File names that do not follow a corpus's convention** (a stray ``notes.wav``, a macOS
``._03-01-...`` companion, an emotion code out of range) are skipped, and the loader logs a warning
with their count and the first few names: a corpus folder collected by hand often holds such files,
and one bad name should not stop the other 1,000 clips. A folder with no valid file at all is an
error (:class:`~training.data.manifest.ManifestError`), and so is a Git LFS pointer in place of
the audio (a checkout of the CREMA-D repository without ``git lfs pull``).

**RAVDESS calm.** RAVDESS has eight emotions; *calm* (code 02) has no counterpart among the seven
classes. The authors added it as a low-arousal variant of neutral, and its clips are acted in a
style of their own (two intensities, like the other emotions, where neutral has one). Mapping it
to neutral triples neutral (72 -> 216 clips) with a distinct acted style, so by default
(``calm="drop"``) the 144 calm clips are left out and the seven classes stay clean;
``calm="neutral"`` keeps them as neutral for users who want more neutral data.

**GoEmotions multi-label rows.** A row's fine emotions are mapped through the official Ekman
mapping (``ekman_mapping.json``; ``neutral`` stays neutral). A row is kept when all its labels map
to ONE common class (``anger`` + ``annoyance`` -> anger; ``neutral`` alone -> neutral) and dropped
when they map to several (``joy`` + ``neutral``, ``anger`` + ``sadness``); the number dropped per
split is logged. This keeps the 7-class single-label task honest without inventing a priority
between classes.

**DailyDialog duplicates.** The split files repeat some dialogues verbatim (569 extra copies in
train, 5 in validation, 4 in test) and 68 validation / 92 test dialogues also occur in train. With
``dedupe=True`` (the default) a dialogue text is kept once, in the first of train, validation,
test in which it occurs, so model selection on validation and the test score never see a training
dialogue; ``dedupe=False`` gives the files as published.

Speakers: RAVDESS ``ravdess-AA``, CREMA-D ``crema-d-NNNN``, TESS ``tess-OAF`` / ``tess-YAF``,
MELD the character name as in the corpus. DailyDialog has no speaker ids: its dialogues are
two-party with alternating turns, so turn 0, 2, 4 ... is ``<dialogue>-A`` and 1, 3, 5 ...
``<dialogue>-B`` (an assumption of the layout, not an annotation). GoEmotions (independent Reddit
comments, no authors in the files) has no speaker.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from training.data.labels import EMOTIONS, normalize_emotion
from training.data.manifest import Example, ManifestError

__all__ = [
    "CORPORA",
    "CREMA_D_EMOTIONS",
    "CREMA_D_SENTENCES",
    "DAILYDIALOG_EMOTIONS",
    "RAVDESS_EMOTIONS",
    "RAVDESS_STATEMENTS",
    "TESS_EMOTIONS",
    "Corpus",
    "corpus_of",
    "load_crema_d",
    "load_dailydialog",
    "load_goemotions",
    "load_meld",
    "load_ravdess",
    "load_tess",
]

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")
_MAX_LISTED = 5


# ---- shared helpers --------------------------------------------------------------------------------


def _label(name: str) -> str:
    """The common class of a corpus emotion name (see :mod:`training.data.labels`)."""
    label = normalize_emotion(name)
    if label is None:
        raise ValueError(f"emotion {name!r} has no common class")
    return label


def _listed(items: Sequence[str]) -> str:
    more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _log_skipped(corpus: str, what: str, items: Sequence[str]) -> None:
    if items:
        log.warning("%s: skipped %d %s: %s", corpus, len(items), what, _listed(items))


def _log_loaded(corpus: str, examples: Sequence[Example]) -> None:
    counts = Counter(e.label for e in examples)
    splits = Counter(e.split or "-" for e in examples)
    log.info(
        "%s: %d examples, labels %s, splits %s",
        corpus,
        len(examples),
        {k: counts[k] for k in EMOTIONS if counts[k]},
        dict(splits),
    )


def _audio_files(root: Path, corpus: str) -> list[Path]:
    """Every ``.wav`` / ``.flac`` file under ``root`` (sorted); an error when there is none or when
    files are Git LFS pointers instead of audio."""
    if not root.is_dir():
        raise ManifestError(f"{corpus}: {root} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ManifestError(f"{corpus}: no {'/'.join(AUDIO_SUFFIXES)} files under {root}")
    pointers = [
        str(p) for p in files if p.stat().st_size < 1024 and p.read_bytes().startswith(b"version https://git-lfs")
    ]
    if pointers:
        raise ManifestError(
            f"{corpus}: {len(pointers)} file(s) under {root} are Git LFS pointers, not audio "
            f"(run `git lfs pull` in the corpus checkout): {_listed(pointers)}"
        )
    return files


def _speech_corpus(
    corpus: str, root: Path, examples: Iterable[Example], misnamed: str, malformed: Sequence[str]
) -> list[Example]:
    """The end of every speech loader: log the files not named by the corpus's convention
    (``misnamed`` says what the convention is), drop repeated clips, refuse an empty result."""
    _log_skipped(corpus, f"file(s) not named {misnamed}", malformed)
    unique = _unique_by_id(corpus, examples)
    if not unique:
        raise ManifestError(f"{corpus}: no usable clip under {root}")
    _log_loaded(corpus, unique)
    return unique


def _unique_by_id(corpus: str, examples: Iterable[Example]) -> list[Example]:
    """The first example of each id; later ones (the same clip twice, e.g. as .wav and .flac or in
    a copied sub-folder) are dropped and logged."""
    seen: dict[str, Example] = {}
    again: list[str] = []
    for ex in examples:
        if ex.id in seen:
            again.append(f"{ex.audio_path} (same clip as {seen[ex.id].audio_path})")
        else:
            seen[ex.id] = ex
    _log_skipped(corpus, "duplicate clip(s)", again)
    return list(seen.values())


def _read_text(path: Path, corpus: str) -> str:
    """A text file as UTF-8 (a BOM is removed); a file that is not UTF-8 is read as cp1252 (the
    encoding early MELD releases leaked) with a warning."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        log.warning("%s: %s is not UTF-8 (byte %d); reading it as cp1252", corpus, path, e.start)
        return data.decode("cp1252", errors="replace")


def _split_files(root: Path, corpus: str, files: dict[str, str]) -> list[tuple[str, Path]]:
    """``[(split, path), ...]`` of the split files present (``files``: split -> relative path); an
    error when none is, a warning for each one missing."""
    if not root.is_dir():
        raise ManifestError(f"{corpus}: {root} is not a folder")
    present = [(split, root / rel) for split, rel in files.items() if (root / rel).is_file()]
    if not present:
        raise ManifestError(f"{corpus}: none of {', '.join(files.values())} under {root}")
    for split, rel in files.items():
        if not (root / rel).is_file():
            log.warning("%s: %s not found under %s; no %s split", corpus, rel, root, split)
    return present


# ---- RAVDESS ---------------------------------------------------------------------------------------

RAVDESS_EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
"""RAVDESS emotion code -> the corpus's emotion name (``extra["emotion"]``)."""

RAVDESS_STATEMENTS: dict[str, str] = {
    "01": "Kids are talking by the door",
    "02": "Dogs are sitting by the door",
}
_RAVDESS_NAME = re.compile(
    r"^(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])"
    r"-(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)$"
)


def load_ravdess(root: str | Path, *, calm: Literal["drop", "neutral"] = "drop") -> list[Example]:
    """RAVDESS speech clips under ``root`` (``Actor_NN/MM-VV-EE-II-SS-RR-AA.flac`` or ``.wav``).

    ``speaker`` is ``ravdess-AA``, ``text`` the statement, ``language`` ``en``, ``split`` empty;
    ``extra`` holds ``actor``, ``gender`` (odd actors male, even female), ``emotion`` (the RAVDESS
    name), ``intensity`` (``normal``/``strong``), ``statement`` and ``repetition`` (1 or 2).
    ``calm`` chooses what calm clips become (see the module docstring). Song clips (vocal channel
    02) are not speech and are dropped; names that do not parse are skipped; both are logged.
    Note: ``Actor_07/03-01-03-01-02-0{1,2}-07`` are one recording released twice (same speaker, so a
    speaker split keeps them together).
    """
    if calm not in ("drop", "neutral"):
        raise ValueError(f"calm must be 'drop' or 'neutral', got {calm!r}")
    root = Path(root)
    malformed: list[str] = []
    dropped: Counter[str] = Counter()
    examples: list[Example] = []
    for path in _audio_files(root, "RAVDESS"):
        m = _RAVDESS_NAME.match(path.stem)
        if m is None or m["actor"] == "00":
            malformed.append(path.name)
            continue
        if m["channel"] != "01":
            dropped["song clip (vocal channel 02, not speech)"] += 1
            continue
        emotion = RAVDESS_EMOTIONS[m["emotion"]]
        if emotion == "calm" and calm == "drop":
            dropped["calm (no common class; --calm neutral keeps them as neutral)"] += 1
            continue
        actor = int(m["actor"])
        examples.append(
            Example(
                id=f"ravdess-{path.stem}",
                audio_path=path,
                label="neutral" if emotion == "calm" else _label(emotion),
                text=RAVDESS_STATEMENTS[m["statement"]],
                speaker=f"ravdess-{m['actor']}",
                language="en",
                extra={
                    "actor": actor,
                    "gender": "male" if actor % 2 else "female",
                    "emotion": emotion,
                    "intensity": "normal" if m["intensity"] == "01" else "strong",
                    "statement": int(m["statement"]),
                    "repetition": int(m["repetition"]),
                    "modality": int(m["modality"]),
                },
            )
        )
    for reason, n in dropped.items():
        log.info("RAVDESS: dropped %d %s", n, reason)
    return _speech_corpus("RAVDESS", root, examples, "MM-VV-EE-II-SS-RR-AA", malformed)


# ---- CREMA-D ---------------------------------------------------------------------------------------

CREMA_D_SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
CREMA_D_EMOTIONS: dict[str, str] = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
CREMA_D_LEVELS: dict[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
_CREMA_D_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")


def _crema_d_demographics(root: Path) -> dict[int, dict[str, Any]]:
    """``actor -> {"gender", "age"}`` from ``VideoDemographics.csv`` when it is there."""
    path = next(
        (p for p in (root / "VideoDemographics.csv", root.parent / "VideoDemographics.csv") if p.is_file()), None
    )
    if path is None:
        log.info("CREMA-D: no VideoDemographics.csv next to the audio; no gender/age in extra")
        return {}
    out: dict[int, dict[str, Any]] = {}
    for row in csv.DictReader(io.StringIO(_read_text(path, "CREMA-D"))):
        try:
            out[int(row["ActorID"])] = {"gender": row["Sex"].strip().lower(), "age": int(row["Age"])}
        except (KeyError, ValueError):
            continue
    return out


def load_crema_d(root: str | Path) -> list[Example]:
    """CREMA-D clips under ``root`` (the corpus folder holding ``AudioWAV/``, or ``AudioWAV``
    itself): ``<actor>_<sentence>_<emotion>_<level>.wav``, e.g. ``1001_DFA_ANG_XX.wav``.

    ``speaker`` is ``crema-d-<actor>``, ``text`` the sentence (12 codes, :data:`CREMA_D_SENTENCES`),
    ``language`` ``en``, ``split`` empty; ``extra`` holds ``actor``, ``sentence`` (the code),
    ``emotion`` (the code), ``intensity`` (``low``/``medium``/``high``/``unspecified`` for
    LO/MD/HI/XX) and, when ``VideoDemographics.csv`` is found, ``gender`` and ``age``. All six
    emotions have a common class; names that do not parse are skipped and logged.
    """
    root = Path(root)
    demographics = _crema_d_demographics(root)
    malformed: list[str] = []
    examples: list[Example] = []
    for path in _audio_files(root, "CREMA-D"):
        m = _CREMA_D_NAME.match(path.stem)
        if (
            m is None
            or m["sentence"] not in CREMA_D_SENTENCES
            or m["emotion"] not in CREMA_D_EMOTIONS
            or m["level"] not in CREMA_D_LEVELS
        ):
            malformed.append(path.name)
            continue
        actor = int(m["actor"])
        examples.append(
            Example(
                id=f"crema-d-{path.stem}",
                audio_path=path,
                label=CREMA_D_EMOTIONS[m["emotion"]],
                text=CREMA_D_SENTENCES[m["sentence"]],
                speaker=f"crema-d-{m['actor']}",
                language="en",
                extra={
                    "actor": actor,
                    "sentence": m["sentence"],
                    "emotion": m["emotion"],
                    "intensity": CREMA_D_LEVELS[m["level"]],
                    **demographics.get(actor, {}),
                },
            )
        )
    return _speech_corpus("CREMA-D", root, examples, "<actor>_<sentence>_<emotion>_<level>", malformed)


# ---- TESS ------------------------------------------------------------------------------------------

TESS_EMOTIONS: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "neutral": "neutral",
    "sad": "sadness",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise",
}
"""TESS emotion spellings (file names, any case) -> common class; pleasant surprise is surprise."""

TESS_SPEAKERS: dict[str, int] = {"OAF": 64, "YAF": 26}
"""The two actresses (older / younger adult female) and their ages."""
_TESS_NAME = re.compile(r"^(?P<speaker>[OY]AF)_(?P<word>[^_]+)_(?P<emotion>.+)$", re.IGNORECASE)


def load_tess(root: str | Path) -> list[Example]:
    """TESS clips under ``root``: ``<SPEAKER>_<emotion>/<SPEAKER>_<word>_<emotion>.wav`` (e.g.
    ``OAF_angry/OAF_back_angry.wav``, ``YAF_pleasant_surprise/YAF_back_ps.wav``).

    The label comes from the file name (``angry``, ``disgust``, ``fear``, ``happy``, ``neutral``,
    ``sad``, ``ps`` / ``pleasant_surprise(d)`` in any case). ``speaker`` is ``tess-OAF`` or
    ``tess-YAF``, ``text`` ``"Say the word <word>"``, ``language`` ``en``, ``split`` empty;
    ``extra`` holds ``word``, ``emotion`` (as spelt), ``gender`` (``female``) and ``age``. Names that
    do not parse are skipped and logged.
    """
    root = Path(root)
    malformed: list[str] = []
    examples: list[Example] = []
    for path in _audio_files(root, "TESS"):
        m = _TESS_NAME.match(path.stem)
        label = TESS_EMOTIONS.get(m["emotion"].lower()) if m else None
        if m is None or label is None:
            malformed.append(path.name)
            continue
        speaker, word = m["speaker"].upper(), m["word"].lower()
        examples.append(
            Example(
                id=f"tess-{speaker}_{word}_{m['emotion'].lower()}",
                audio_path=path,
                label=label,
                text=f"Say the word {word}",
                speaker=f"tess-{speaker}",
                language="en",
                extra={"word": word, "emotion": m["emotion"], "gender": "female", "age": TESS_SPEAKERS[speaker]},
            )
        )
    return _speech_corpus("TESS", root, examples, "<OAF|YAF>_<word>_<emotion>", malformed)


# ---- MELD ------------------------------------------------------------------------------------------

_MELD_FILES = {"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
_MELD_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
_MELD_EXTRA = {
    "sentiment": "Sentiment",
    "season": "Season",
    "episode": "Episode",
    "start": "StartTime",
    "end": "EndTime",
}


def load_meld(root: str | Path) -> list[Example]:
    """MELD's text annotations: ``train_sent_emo.csv``, ``dev_sent_emo.csv`` (split ``val``) and
    ``test_sent_emo.csv`` under ``root``; one text-only example per utterance.

    Read with the ``csv`` module (quoted fields, CRLF line ends), UTF-8 (a BOM is removed; a
    non-UTF-8 file of an early release is read as cp1252 with a warning). ``id`` is
    ``meld-<split>-dia<D>_utt<U>`` (``Dialogue_ID`` restarts in each split), ``call_id``
    ``meld-<split>-dia<D>``, ``speaker`` the character, ``language`` ``en``; ``extra`` holds
    ``dialogue``, ``turn``, ``emotion`` (MELD's name: ``joy`` is happiness), ``sentiment``,
    ``season``, ``episode``, ``start``, ``end``. Rows without text, with an unknown emotion or a
    repeated (dialogue, utterance) key are skipped and logged.
    """
    root = Path(root)
    examples: list[Example] = []
    for split, path in _split_files(root, "MELD", _MELD_FILES):
        reader = csv.DictReader(io.StringIO(_read_text(path, "MELD"), newline=""))
        absent = [c for c in _MELD_COLUMNS if c not in (reader.fieldnames or ())]
        if absent:
            raise ManifestError(f"MELD: {path} lacks column(s) {absent}; found {reader.fieldnames}")
        bad: list[str] = []
        seen: set[tuple[str, str]] = set()
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            text = (row["Utterance"] or "").strip()
            dialogue, turn = (row["Dialogue_ID"] or "").strip(), (row["Utterance_ID"] or "").strip()
            label = normalize_emotion(row["Emotion"])
            if not text or label is None or not dialogue.isdigit() or not turn.isdigit():
                bad.append(f"{where} (text {text[:20]!r}, emotion {row['Emotion']!r}, ids {dialogue!r}/{turn!r})")
                continue
            if (dialogue, turn) in seen:
                bad.append(f"{where} (dialogue {dialogue} utterance {turn} again)")
                continue
            seen.add((dialogue, turn))
            examples.append(
                Example(
                    id=f"meld-{split}-dia{dialogue}_utt{turn}",
                    audio_path=None,
                    label=label,
                    text=text,
                    speaker=(row["Speaker"] or "").strip() or None,
                    language="en",
                    split=split,
                    call_id=f"meld-{split}-dia{dialogue}",
                    extra={
                        "dialogue": int(dialogue),
                        "turn": int(turn),
                        "emotion": row["Emotion"].strip(),
                        **{key: (row.get(column) or "").strip() or None for key, column in _MELD_EXTRA.items()},
                    },
                )
            )
        _log_skipped("MELD", f"row(s) of {path.name}", bad)
    _log_loaded("MELD", examples)
    return examples


# ---- DailyDialog -----------------------------------------------------------------------------------

DAILYDIALOG_EMOTIONS: dict[str, str] = {
    "0": "neutral",
    "1": "anger",
    "2": "disgust",
    "3": "fear",
    "4": "happiness",
    "5": "sadness",
    "6": "surprise",
}
"""DailyDialog emotion code -> common class (``0`` "no emotion" is neutral)."""
DAILYDIALOG_ACTS: dict[str, str] = {"1": "inform", "2": "question", "3": "directive", "4": "commissive"}
_DAILYDIALOG_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def load_dailydialog(root: str | Path, *, dedupe: bool = True) -> list[Example]:
    """DailyDialog's split files under ``root``: ``<s>/dialogues_<s>.txt`` (utterances, each ending
    in ``__eou__``), ``<s>/dialogues_emotion_<s>.txt`` (one code per utterance) and, optionally,
    ``<s>/dialogues_act_<s>.txt``, for ``s`` in ``train``, ``validation`` (split ``val``), ``test``.

    One text-only example per utterance (the corpus's tokenised text, stripped): ``id``
    ``dailydialog-<split>-<line>-t<turn>``, ``call_id`` ``dailydialog-<split>-<line>`` (line from 1),
    ``speaker`` ``<call_id>-A`` / ``-B`` by turn parity (the corpus has no speaker ids), ``language``
    ``en``; ``extra`` holds ``dialogue`` (the line), ``turn`` and ``act`` when the act file is there.
    ``dedupe`` drops repeated dialogues (see the module docstring). A dialogue whose emotion count
    differs from its utterance count is skipped and logged; files of different lengths are an error.
    """
    root = Path(root)
    files = {split: f"{name}/dialogues_{name}.txt" for split, name in _DAILYDIALOG_SPLITS.items()}
    first_split: dict[str, str] = {}  # dialogue text -> the split it was kept in
    examples: list[Example] = []
    for split, text_path in _split_files(root, "DailyDialog", files):
        name = _DAILYDIALOG_SPLITS[split]
        emotion_path = text_path.with_name(f"dialogues_emotion_{name}.txt")
        act_path = text_path.with_name(f"dialogues_act_{name}.txt")
        if not emotion_path.is_file():
            raise ManifestError(f"DailyDialog: {emotion_path} is missing (the labels of {text_path.name})")
        dialogues = _read_text(text_path, "DailyDialog").splitlines()
        emotions = _read_text(emotion_path, "DailyDialog").splitlines()
        acts = _read_text(act_path, "DailyDialog").splitlines() if act_path.is_file() else None
        if len(emotions) != len(dialogues) or (acts is not None and len(acts) != len(dialogues)):
            raise ManifestError(
                f"DailyDialog: {name} files have different line counts ({len(dialogues)} dialogues, "
                f"{len(emotions)} emotion lines{'' if acts is None else f', {len(acts)} act lines'})"
            )
        bad: list[str] = []
        repeated: Counter[str] = Counter()  # split of the kept copy -> dialogues dropped here
        for n, line in enumerate(dialogues, start=1):
            if not line.strip():
                continue
            if dedupe:
                if line.strip() in first_split:
                    repeated[first_split[line.strip()]] += 1
                    continue
                first_split[line.strip()] = split
            turns = [t.strip() for t in line.split("__eou__")[:-1]]
            codes = emotions[n - 1].split()
            turn_acts = acts[n - 1].split() if acts is not None else None
            if (
                len(codes) != len(turns)
                or any(c not in DAILYDIALOG_EMOTIONS for c in codes)
                or (turn_acts is not None and len(turn_acts) != len(turns))
                or not all(turns)
            ):
                bad.append(f"{text_path.name}:{n} ({len(turns)} utterances, emotions {' '.join(codes)!r})")
                continue
            call_id = f"dailydialog-{split}-{n:05d}"
            for t, (text, code) in enumerate(zip(turns, codes, strict=True)):
                extra: dict[str, Any] = {"dialogue": n, "turn": t}
                if turn_acts is not None:
                    extra["act"] = DAILYDIALOG_ACTS.get(turn_acts[t], turn_acts[t])
                examples.append(
                    Example(
                        id=f"{call_id}-t{t:02d}",
                        audio_path=None,
                        label=DAILYDIALOG_EMOTIONS[code],
                        text=text,
                        speaker=f"{call_id}-{'AB'[t % 2]}",
                        language="en",
                        split=split,
                        call_id=call_id,
                        extra=extra,
                    )
                )
        _log_skipped("DailyDialog", f"dialogue(s) of {name} with mismatched labels", bad)
        for kept_in, n in repeated.items():
            where = "earlier in the same split" if kept_in == split else f"in {_DAILYDIALOG_SPLITS[kept_in]}"
            log.info("DailyDialog: dropped %d %s dialogue(s) already seen %s (dedupe)", n, name, where)
    _log_loaded("DailyDialog", examples)
    return examples


# ---- GoEmotions ------------------------------------------------------------------------------------

_GOEMOTIONS_FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}


def _goemotions_labels(root: Path) -> tuple[list[str], list[str]]:
    """``(names, classes)``: the GoEmotions name and the common class of each label id, from
    ``emotions.txt`` and ``ekman_mapping.json``."""
    names_path, mapping_path = root / "emotions.txt", root / "ekman_mapping.json"
    for p in (names_path, mapping_path):
        if not p.is_file():
            raise ManifestError(f"GoEmotions: {p} is missing (label names and their Ekman mapping)")
    names = [n.strip() for n in _read_text(names_path, "GoEmotions").splitlines() if n.strip()]
    ekman = json.loads(_read_text(mapping_path, "GoEmotions"))
    group = {fine: coarse for coarse, fines in ekman.items() for fine in fines}
    group.setdefault("neutral", "neutral")  # not listed in the mapping: it stays neutral
    unmapped = [n for n in names if n not in group]
    if unmapped:
        raise ManifestError(f"GoEmotions: {mapping_path} does not map {unmapped}")
    return names, [_label(group[n]) for n in names]


def load_goemotions(root: str | Path) -> list[Example]:
    """GoEmotions ``train.tsv``, ``dev.tsv`` (split ``val``), ``test.tsv`` under ``root`` (no header;
    text, comma-separated label ids, comment id; CSV quoting, so read with a CSV reader), with
    ``emotions.txt`` and ``ekman_mapping.json``; one text-only example per kept comment.

    A row is kept when its labels map to one common class and dropped otherwise (module docstring);
    the drops are logged per split. ``id`` is ``goemotions-<comment id>``, ``language`` ``en``, no
    speaker; ``extra`` holds ``emotions`` (the fine GoEmotions names of the row). Malformed rows
    (not three fields, an unknown label id, no text) are skipped and logged.
    """
    root = Path(root)
    present = _split_files(root, "GoEmotions", _GOEMOTIONS_FILES)
    names, classes = _goemotions_labels(root)
    examples: list[Example] = []
    for split, path in present:
        bad: list[str] = []
        mixed = 0
        reader = csv.reader(io.StringIO(_read_text(path, "GoEmotions"), newline=""), delimiter="\t")
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            ids = row[1].split(",") if len(row) == 3 else []
            if (
                len(row) != 3
                or not row[0].strip()
                or not row[2].strip()
                or not all(i.strip().isdigit() and int(i) < len(classes) for i in ids)
            ):
                bad.append(f"{where} ({len(row)} fields: {row[:3]!r:.60})")
                continue
            found = {classes[int(i)] for i in ids}
            if len(found) != 1:
                mixed += 1
                continue
            examples.append(
                Example(
                    id=f"goemotions-{row[2].strip()}",
                    audio_path=None,
                    label=found.pop(),
                    text=row[0].strip(),
                    language="en",
                    split=split,
                    extra={"emotions": [names[int(i)] for i in ids]},
                )
            )
        _log_skipped("GoEmotions", f"malformed row(s) of {path.name}", bad)
        log.info("GoEmotions: dropped %d row(s) of %s whose labels map to several classes", mixed, path.name)
    _log_loaded("GoEmotions", examples)
    return examples


# ---- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """A corpus ``emotion data prepare`` can read."""

    name: str
    kind: Literal["speech", "text"]
    """``speech`` (audio files, with transcripts) or ``text`` (text-only examples)."""
    description: str
    load: Callable[..., list[Example]]
    """``load(src, **options)`` -> examples."""
    options: tuple[str, ...] = ()
    """Keyword options of ``load`` the command line may set (``calm`` for RAVDESS)."""


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "ravdess",
            "speech",
            "RAVDESS acted speech (24 actors, 8 emotions; calm dropped or neutral), no split",
            load_ravdess,
            ("calm",),
        ),
        Corpus(
            "crema-d", "speech", "CREMA-D acted speech (91 actors, 12 sentences, 6 emotions), no split", load_crema_d
        ),
        Corpus("tess", "speech", "TESS 'Say the word ...' (2 actresses, 200 words, 7 emotions), no split", load_tess),
        Corpus("meld", "text", "MELD Friends dialogue utterances (text only), official train/dev/test", load_meld),
        Corpus(
            "dailydialog",
            "text",
            "DailyDialog everyday dialogues (text only, de-duplicated), official splits",
            load_dailydialog,
        ),
        Corpus(
            "goemotions",
            "text",
            "GoEmotions Reddit comments (text only, Ekman mapping, single-class rows), official splits",
            load_goemotions,
        ),
    )
}
"""Name -> :class:`Corpus`, in the order ``emotion data list`` shows them."""


def corpus_of(example_id: str) -> str | None:
    """The registered corpus an example comes from, by the ``<name>-`` prefix its loader gives every
    id (``ravdess-03-01-...``, ``meld-test-dia3_utt0``); None for other ids (synthetic calls, a
    user's own manifest)."""
    for name in sorted(CORPORA, key=len, reverse=True):
        if example_id.startswith(f"{name}-"):
            return name
    return None
