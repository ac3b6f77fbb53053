"""IEMOCAP (Busso et al. 2008) read from its release layout.

Layout (``root`` is the folder holding ``Session1`` ... ``Session5``)::

    Session1/dialog/EmoEvaluation/Ses01F_impro01.txt     # one block per utterance
    Session1/dialog/transcriptions/Ses01F_impro01.txt    # "<utt> [start-end]: text"
    Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav

An EmoEvaluation block starts with the consensus line
``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`` (times, utterance,
category, valence/activation/dominance) followed by per-evaluator lines (``C-E1:``, ``C-F2:``,
``A-E3:`` ...) which are ignored. The speaker of an utterance is its session plus the gender letter
of the utterance id's last part (``Ses01F_impro01_M013`` is spoken by ``Ses01M``), the standard
speaker-independent unit; evaluation is leave-one-session-out (:func:`session_folds`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from training.data.manifest import Example, ManifestError

__all__ = [
    "IEMOCAP_4CLASS",
    "IEMOCAP_7CLASS",
    "IEMOCAP_FULL",
    "EmoEvaluationEntry",
    "load_iemocap",
    "parse_emo_evaluation",
    "parse_transcriptions",
    "session_folds",
]

log = logging.getLogger(__name__)

IEMOCAP_4CLASS: dict[str, str] = {
    "neu": "neutral",
    "ang": "anger",
    "sad": "sadness",
    "hap": "happiness",
    "exc": "happiness",
}
"""The usual 4-class protocol: happiness merged with excitement; every other category dropped."""

IEMOCAP_FULL: dict[str, str] = {
    "ang": "anger",
    "hap": "happiness",
    "exc": "excitement",
    "sad": "sadness",
    "neu": "neutral",
    "fru": "frustration",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
    "xxx": "undecided",
}
"""Every IEMOCAP category under a readable name (``xxx`` = no evaluator majority)."""

IEMOCAP_7CLASS: dict[str, str] = {
    "ang": "anger",
    "sad": "sadness",
    "neu": "neutral",
    "hap": "happiness",
    "exc": "happiness",
    "fea": "fear",
    "dis": "disgust",
    "sur": "surprise",
}
"""Mapped onto :data:`~shared.settings.EMOTIONS` (the AI-Hub classes); frustration etc. dropped."""

_LABEL_MAPS: dict[str, dict[str, str]] = {
    "4class": IEMOCAP_4CLASS,
    "full": IEMOCAP_FULL,
    "7class": IEMOCAP_7CLASS,
}
_DEFAULT_DROP = ("xxx", "oth")

_EVAL_RE = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<utt>Ses\S+)\s+(?P<code>\S+)"
    r"\s+\[\s*(?P<v>[\d.]+)\s*,\s*(?P<a>[\d.]+)\s*,\s*(?P<d>[\d.]+)\s*\]"
)
_TRANS_RE = re.compile(r"^(?P<utt>Ses\S+)\s+\[\s*[\d.]+\s*-\s*[\d.]+\s*\]:\s*(?P<text>.*?)\s*$")
_SESSION_RE = re.compile(r"^Session(\d+)$")


@dataclass(frozen=True)
class EmoEvaluationEntry:
    """The consensus line of one utterance in an EmoEvaluation file."""

    utterance: str
    start: float
    end: float
    code: str
    """IEMOCAP category code: ang hap exc sad neu fru sur fea dis oth xxx."""
    vad: tuple[float, float, float]
    """Mean valence, activation, dominance (1-5)."""


def parse_emo_evaluation(path: str | Path) -> list[EmoEvaluationEntry]:
    """The consensus entries of an EmoEvaluation file (evaluator and header lines are skipped).

    Raises :class:`ManifestError` naming the line for a line that starts with ``[`` but does not
    have the consensus-line shape.
    """
    path = Path(path)
    entries: list[EmoEvaluationEntry] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.startswith("["):
            continue  # header ("% [START_TIME - ..."), blank, evaluator lines (C-E1:, A-E3: ...)
        m = _EVAL_RE.match(line.strip())
        if m is None:
            raise ManifestError(f"{path}:{lineno}: unrecognised EmoEvaluation line: {line!r}")
        entries.append(
            EmoEvaluationEntry(
                utterance=m["utt"],
                start=float(m["start"]),
                end=float(m["end"]),
                code=m["code"].lower(),
                vad=(float(m["v"]), float(m["a"]), float(m["d"])),
            )
        )
    return entries


def parse_transcriptions(path: str | Path) -> dict[str, str]:
    """``utterance id -> text`` from a transcription file; lines without an id/time are skipped."""
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        m = _TRANS_RE.match(line.strip())
        if m is not None:
            out[m["utt"]] = m["text"]
    return out


def _speaker(utterance: str) -> tuple[str, str]:
    """``(speaker, gender)`` of an utterance id: session prefix + gender letter of the last part."""
    session = utterance[:5]  # "Ses01"
    gender = utterance.rsplit("_", 1)[-1][:1].upper()
    if gender not in ("F", "M"):
        gender = utterance[5:6].upper()
    return f"{session}{gender}", gender


def _session_dirs(root: Path, sessions: Iterable[int] | None) -> list[tuple[int, Path]]:
    found = (
        sorted(
            (int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _SESSION_RE.match(p.name)) is not None
        )
        if root.is_dir()
        else []
    )
    if not found:
        raise ManifestError(f"{root}: no Session1..Session5 folders (is this the IEMOCAP root?)")
    if sessions is not None:
        wanted = set(sessions)
        found = [(n, p) for n, p in found if n in wanted]
        if not found:
            raise ManifestError(f"{root}: none of the sessions {sorted(wanted)} exist")
    return found


def load_iemocap(
    root: str | Path,
    label_map: Literal["4class", "7class", "full"] | Mapping[str, str] = "4class",
    *,
    sessions: Iterable[int] | None = None,
    drop: Collection[str] = _DEFAULT_DROP,
    test_session: int | None = 5,
    val_session: int | None = None,
    require_audio: bool = True,
) -> list[Example]:
    """IEMOCAP utterances as :class:`Example` objects (language ``en``).

    ``label_map`` maps category codes to labels: ``"4class"`` (neutral/anger/sadness/happiness,
    hap+exc merged), ``"7class"`` (the :data:`~shared.settings.EMOTIONS` classes), ``"full"`` (all
    categories) or any ``{code: label}`` mapping; utterances whose code is unmapped or in ``drop``
    (default ``xxx`` and ``oth``) are left out. ``split`` is ``test`` for ``test_session``,
    ``val`` for ``val_session`` and ``train`` otherwise (``None`` leaves the split unset).
    ``extra`` holds ``session``, ``dialog``, ``gender``, ``start``, ``end``, ``vad``, ``code`` and
    ``improvised``. With ``require_audio`` a :class:`ManifestError` lists utterances whose wav is
    missing; otherwise they are skipped with a warning.
    """
    root = Path(root)
    mapping = _LABEL_MAPS[label_map] if isinstance(label_map, str) else dict(label_map)
    dropped: Counter[str] = Counter()
    missing: list[str] = []
    examples: list[Example] = []
    for session, sdir in _session_dirs(root, sessions):
        eval_files = sorted((sdir / "dialog" / "EmoEvaluation").glob("*.txt"))
        if not eval_files:
            raise ManifestError(f"{sdir}: no dialog/EmoEvaluation/*.txt files")
        for eval_file in eval_files:
            dialog = eval_file.stem
            trans_file = sdir / "dialog" / "transcriptions" / f"{dialog}.txt"
            texts = parse_transcriptions(trans_file) if trans_file.is_file() else {}
            for entry in parse_emo_evaluation(eval_file):
                if entry.code in drop or entry.code not in mapping:
                    dropped[entry.code] += 1
                    continue
                wav = sdir / "sentences" / "wav" / dialog / f"{entry.utterance}.wav"
                if not wav.is_file():
                    missing.append(str(wav))
                    continue
                speaker, gender = _speaker(entry.utterance)
                split = (
                    None
                    if test_session is None and val_session is None
                    else "test"
                    if session == test_session
                    else "val"
                    if session == val_session
                    else "train"
                )
                examples.append(
                    Example(
                        id=entry.utterance,
                        audio_path=wav,
                        label=mapping[entry.code],
                        text=texts.get(entry.utterance),
                        speaker=speaker,
                        language="en",
                        split=split,
                        call_id=dialog,
                        extra={
                            "session": session,
                            "dialog": dialog,
                            "gender": gender,
                            "start": entry.start,
                            "end": entry.end,
                            "vad": list(entry.vad),
                            "code": entry.code,
                            "improvised": "_impro" in dialog,
                        },
                    )
                )
    if missing:
        msg = f"{len(missing)} IEMOCAP wav file(s) missing under {root}, e.g.: " + ", ".join(missing[:5])
        if require_audio:
            raise ManifestError(msg)
        log.warning("%s (skipped)", msg)
    if dropped:
        log.info("IEMOCAP: left out %s", dict(sorted(dropped.items())))
    log.info("IEMOCAP: %d utterances, labels %s", len(examples), dict(Counter(e.label for e in examples)))
    return examples


def session_folds(examples: Iterable[Example]) -> list[tuple[int, list[Example], list[Example]]]:
    """Leave-one-session-out folds: ``[(session, train, test), ...]`` in session order.

    ``train``/``test`` are copies with ``split`` set accordingly; the session comes from
    ``extra["session"]`` (as :func:`load_iemocap` sets it) or the ``SesNN`` speaker prefix.
    """
    items = list(examples)

    def session_of(ex: Example) -> int:
        if "session" in ex.extra:
            return int(ex.extra["session"])
        if ex.speaker and ex.speaker.startswith("Ses"):
            return int(ex.speaker[3:5])
        raise ValueError(f"example {ex.id!r} has no IEMOCAP session")

    sessions = sorted({session_of(ex) for ex in items})
    folds = []
    for s in sessions:
        train = [replace(ex, split="train") for ex in items if session_of(ex) != s]
        test = [replace(ex, split="test") for ex in items if session_of(ex) == s]
        folds.append((s, train, test))
    return folds
