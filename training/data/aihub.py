"""AI-Hub "감정 분류를 위한 대화 음성 데이터셋" (emotion-classification dialogue speech, Korean).

The corpus ships CSV index files (UTF-8, UTF-8 with BOM, or cp949/EUC-KR -- detected) and a folder
of ``<wav_id>.wav`` files. Columns are matched after NFKC normalisation, lower-casing and removing
spaces, so ``1번 감정``, ``1번감정`` and ``1번 감정 `` are the same column. Accepted names:

============================  ==================================================================
role                          accepted column names
============================  ==================================================================
wav id (required)             ``wav_id``, ``wavid``, ``wav``, ``id``, ``파일명``, ``파일``,
                              ``음성파일``, ``filename``, ``file``, ``file_name``, ``audio``
utterance text                ``발화문``, ``발화``, ``텍스트``, ``문장``, ``text``, ``utterance``,
                              ``transcript``, ``sentence``
final / majority emotion      ``감정``, ``최종감정``, ``최종 감정``, ``emotion``, ``label``,
                              ``final_emotion``
annotator *k* emotion         ``k번 감정``, ``감정_k``, ``감정k``, ``emotion_k``, ``emotionk``,
                              ``annotator_k``
annotator *k* strength        ``k번 감정세기``, ``감정세기_k``, ``감정세기k``, ``intensity_k``,
                              ``strength_k``
situation                     ``상황``, ``situation``
speaker                       ``화자``, ``화자id``, ``speaker``, ``speaker_id``
gender / age                  ``성별``, ``gender``, ``sex`` / ``나이``, ``연령``, ``age``
============================  ==================================================================

At least a wav id and one label source (final column, annotator columns or situation) are
required; otherwise :class:`~training.data.manifest.ManifestError` lists the columns found. Label
values may be Korean (분노 슬픔 중립 행복 공포 혐오 놀람) or English in any case (``Angry``,
``Sadness`` ...; see :mod:`training.data.labels`).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from training.data.labels import EMOTIONS, normalize_emotion
from training.data.manifest import Example, ManifestError

__all__ = ["AIHubColumns", "detect_encoding", "find_columns", "load_aihub", "read_csv_rows"]

log = logging.getLogger(__name__)

LabelSource = Literal["auto", "final", "majority", "situation"]

_ID_NAMES = (
    "wav_id",
    "wavid",
    "wav",
    "id",
    "파일명",
    "파일",
    "음성파일",
    "filename",
    "file",
    "file_name",
    "audio",
)
_TEXT_NAMES = ("발화문", "발화", "텍스트", "문장", "text", "utterance", "transcript", "sentence")
_FINAL_NAMES = ("감정", "최종감정", "emotion", "label", "final_emotion")
_SITUATION_NAMES = ("상황", "situation")
_SPEAKER_NAMES = ("화자", "화자id", "speaker", "speaker_id", "speakerid")
_GENDER_NAMES = ("성별", "gender", "sex")
_AGE_NAMES = ("나이", "연령", "age")
_VOTE_RES = (r"(\d+)번감정", r"감정_?(\d+)", r"emotion_?(\d+)", r"annotator_?(\d+)")
_STRENGTH_RES = (r"(\d+)번감정세기", r"감정세기_?(\d+)", r"intensity_?(\d+)", r"strength_?(\d+)")


def _norm(name: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", name).replace("\ufeff", "")).lower()


@dataclass(frozen=True)
class AIHubColumns:
    """Which CSV column plays which role (original header names; ``None`` = absent)."""

    wav_id: str
    text: str | None
    final: str | None
    situation: str | None
    votes: tuple[str, ...]
    """Annotator emotion columns, in annotator order."""
    strengths: tuple[str | None, ...]
    """Strength column of each annotator in :attr:`votes` (``None`` when absent)."""
    speaker: str | None
    gender: str | None
    age: str | None


def detect_encoding(path: str | Path) -> str:
    """``utf-8-sig``, ``utf-16`` (with BOM) or ``cp949`` (a superset of EUC-KR), by decoding."""
    data = Path(path).read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in ("utf-8-sig", "cp949"):
        try:
            data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    raise ManifestError(f"{path}: not UTF-8, UTF-16 or cp949/EUC-KR text")


def read_csv_rows(path: str | Path, encoding: str | None = None) -> tuple[list[str], list[dict[str, str]], str]:
    """``(header, rows, encoding)`` of a CSV/TSV file; delimiter sniffed among , TAB ; |."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"AI-Hub CSV not found: {path}")
    encoding = encoding or detect_encoding(path)
    text = path.read_text(encoding=encoding)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:8192], delimiters=",\t;|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise ManifestError(f"{path}: empty CSV") from None
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        rows.append({h: (values[i].strip() if i < len(values) else "") for i, h in enumerate(header)})
    return header, rows, encoding


def find_columns(header: Sequence[str], *, source: str = "CSV") -> AIHubColumns:
    """Match ``header`` against the accepted names (see the module docstring)."""
    by_norm = {_norm(h): h for h in header}

    def pick(names: Sequence[str]) -> str | None:
        return next((by_norm[_norm(n)] for n in names if _norm(n) in by_norm), None)

    def numbered(patterns: Sequence[str]) -> dict[int, str]:
        found: dict[int, str] = {}
        for norm, original in by_norm.items():
            for pattern in patterns:
                m = re.fullmatch(pattern, norm)
                if m is not None:
                    found.setdefault(int(m.group(1)), original)
        return found

    wav_id = pick(_ID_NAMES)
    votes = numbered(_VOTE_RES)
    strengths = numbered(_STRENGTH_RES)
    final = pick(_FINAL_NAMES)
    situation = pick(_SITUATION_NAMES)
    if wav_id is None or not (final or votes or situation):
        needed = [] if wav_id else ["a wav id column (wav_id)"]
        if not (final or votes or situation):
            needed.append("an emotion column (감정, or 1번 감정 ... 5번 감정, or 상황)")
        raise ManifestError(f"{source}: missing {' and '.join(needed)}; columns found: {list(header)}")
    order = sorted(votes)
    return AIHubColumns(
        wav_id=wav_id,
        text=pick(_TEXT_NAMES),
        final=final,
        situation=situation,
        votes=tuple(votes[k] for k in order),
        strengths=tuple(strengths.get(k) for k in order),
        speaker=pick(_SPEAKER_NAMES),
        gender=pick(_GENDER_NAMES),
        age=pick(_AGE_NAMES),
    )


def _majority(votes: list[tuple[str, float]]) -> str:
    """Most frequent label; ties go to the larger summed strength, then the earlier annotator."""
    counts = Counter(label for label, _ in votes)
    strength = Counter()
    for label, s in votes:
        strength[label] += s
    first = {label: i for i, (label, _) in reversed(list(enumerate(votes)))}
    return max(counts, key=lambda lab: (counts[lab], strength[lab], -first[lab]))


def _float(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def load_aihub(
    csv_path: str | Path,
    wav_dir: str | Path | None = None,
    *,
    label_source: LabelSource = "auto",
    encoding: str | None = None,
    missing: Literal["error", "skip"] = "error",
    unknown: Literal["error", "skip"] = "error",
) -> list[Example]:
    """AI-Hub utterances as :class:`Example` objects with labels in :data:`EMOTIONS` (language ``ko``).

    ``wav_dir`` (default: the CSV's folder) holds ``<wav_id>.wav``; files in sub-folders are found
    too. ``label_source``: ``"final"`` uses the final emotion column (``감정``), ``"majority"`` a
    majority vote over the annotator columns (``1번 감정`` ...; ties to the larger summed
    ``감정세기``, then the earlier annotator), ``"situation"`` the ``상황`` column, ``"auto"`` the
    final column when present and non-empty, else the majority, else the situation. ``extra`` keeps
    ``votes``, ``strengths``, ``agreement`` (share of annotators agreeing with the label),
    ``situation``, ``gender``, ``age`` and the CSV ``row``. Unknown label values and missing wavs
    raise :class:`ManifestError` (listing rows / files) unless set to ``"skip"``.
    """
    csv_path = Path(csv_path)
    wav_root = Path(wav_dir) if wav_dir is not None else csv_path.parent
    header, rows, used_encoding = read_csv_rows(csv_path, encoding)
    cols = find_columns(header, source=str(csv_path))
    if label_source == "final" and cols.final is None:
        raise ManifestError(f"{csv_path}: label_source='final' but no final emotion column in {header}")
    if label_source == "majority" and not cols.votes:
        raise ManifestError(f"{csv_path}: label_source='majority' but no annotator columns in {header}")
    if label_source == "situation" and cols.situation is None:
        raise ManifestError(f"{csv_path}: label_source='situation' but no 상황 column in {header}")

    wav_index: dict[str, Path] | None = None
    examples: list[Example] = []
    bad: list[str] = []
    absent: list[str] = []
    for row_no, row in enumerate(rows, start=2):  # row 1 is the header
        wav_id = row[cols.wav_id]
        if not wav_id:
            bad.append(f"row {row_no}: empty {cols.wav_id!r}")
            continue
        stem = wav_id[:-4] if wav_id.lower().endswith(".wav") else wav_id
        votes: list[tuple[str, float]] = []
        unknown_values: list[str] = []
        for vote_col, strength_col in zip(cols.votes, cols.strengths, strict=True):
            raw = row.get(vote_col, "")
            if not raw:
                continue
            label = normalize_emotion(raw)
            if label is None:
                unknown_values.append(raw)
            else:
                votes.append((label, _float(row.get(strength_col, "")) if strength_col else 0.0))
        final_raw = row.get(cols.final, "") if cols.final else ""
        situation_raw = row.get(cols.situation, "") if cols.situation else ""
        candidates = {
            "final": (final_raw, normalize_emotion(final_raw)),
            "situation": (situation_raw, normalize_emotion(situation_raw)),
        }
        if label_source in ("final", "situation"):
            raw, label = candidates[label_source]
            used = label_source
            if raw and label is None:
                unknown_values.append(raw)
        elif label_source == "majority":
            label, used, raw = (_majority(votes) if votes else None), "majority", ""
        else:  # auto
            raw, label = candidates["final"]
            used = "final"
            if raw and label is None:
                unknown_values.append(raw)
            if label is None and votes:
                label, used = _majority(votes), "majority"
            if label is None and candidates["situation"][1] is not None:
                label, used = candidates["situation"][1], "situation"
        if unknown_values and (label is None or unknown == "error"):
            bad.append(f"row {row_no} ({stem}): unknown emotion value(s) {unknown_values}")
            continue
        if label is None:
            bad.append(f"row {row_no} ({stem}): no emotion label")
            continue
        wav = wav_root / f"{stem}.wav"
        if not wav.is_file():
            if wav_index is None:
                wav_index = {p.stem: p for p in sorted(wav_root.rglob("*.wav"))} if wav_root.is_dir() else {}
            found = wav_index.get(stem)
            if found is None:
                absent.append(str(wav))
                continue
            wav = found
        agreement = sum(1 for v, _ in votes if v == label) / len(votes) if votes else None
        examples.append(
            Example(
                id=stem,
                audio_path=wav,
                label=label,
                text=(row.get(cols.text) or None) if cols.text else None,
                speaker=(row.get(cols.speaker) or None) if cols.speaker else None,
                language="ko",
                extra={
                    "row": row_no,
                    "label_source": used,
                    "votes": [v for v, _ in votes],
                    "strengths": [s for _, s in votes],
                    "agreement": agreement,
                    "situation": normalize_emotion(situation_raw) or situation_raw or None,
                    "gender": (row.get(cols.gender) or None) if cols.gender else None,
                    "age": (row.get(cols.age) or None) if cols.age else None,
                },
            )
        )
    if bad:
        listed = "\n  ".join(bad[:10])
        msg = f"{len(bad)} row(s) of {csv_path} have no usable label:\n  {listed}"
        if unknown == "error":
            raise ManifestError(msg)
        log.warning("%s (skipped)", msg)
    if absent:
        msg = f"{len(absent)} wav file(s) listed in {csv_path} are missing, e.g.: {', '.join(absent[:5])}"
        if missing == "error":
            raise ManifestError(msg)
        log.warning("%s (skipped)", msg)
    counts = Counter(e.label for e in examples)
    log.info(
        "AI-Hub %s (%s): %d utterances, %s",
        csv_path.name,
        used_encoding,
        len(examples),
        {k: counts.get(k, 0) for k in EMOTIONS},
    )
    return examples
