"""The generic dataset manifest: one JSON object per line, one line per utterance.

Fields of a line::

    {"audio": "wav/x.wav", "label": "anger",                      # required
     "id": "x", "text": "...", "speaker": "spk1", "language": "ko",  # optional
     "split": "train", "call_id": "call-0001", "extra": {...}}       # optional

``audio`` is relative to the manifest's folder or absolute. ``id`` defaults to the audio path
without its suffix. A **text-only** utterance (a text corpus such as MELD, DailyDialog or
GoEmotions) has ``"audio": null``, a non-empty ``text`` and an ``id``; its
:attr:`Example.audio_path` is ``None``. A line with neither audio nor text is malformed, and so is
a line without an ``audio`` key (a text-only line says ``null`` explicitly, so a misspelt key is
never taken for one). Feature extraction gives a text-only example the text branch's input only;
``emotion publish``, which needs audio, refuses it with an error that says so. Keys other than the known ones are kept in :attr:`Example.extra` (as is the
content of an ``extra`` object). Every dataset reader in :mod:`training.data` returns
:class:`Example` objects, so IEMOCAP, AI-Hub and the synthetic corpus can all be written to and
read back from this one format.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from shared.settings import EMOTIONS

__all__ = [
    "SPLITS",
    "Example",
    "ManifestError",
    "assign_splits",
    "example_to_obj",
    "read_manifest",
    "split_examples",
    "write_manifest",
]

SPLITS: tuple[str, str, str] = ("train", "val", "test")
_KNOWN_KEYS = ("id", "audio", "label", "text", "speaker", "language", "split", "call_id", "extra")
_MAX_LISTED = 10


class ManifestError(ValueError):
    """A manifest (or a dataset's own index files) is malformed, or names missing audio."""


@dataclass
class Example:
    """One labelled utterance."""

    id: str
    audio_path: Path | None
    """Absolute (or caller-relative) path to the audio file; ``None`` for a text-only utterance."""
    label: str
    text: str | None = None
    speaker: str | None = None
    language: str | None = None
    split: str | None = None
    """``train`` / ``val`` / ``test`` or ``None`` when not yet assigned."""
    call_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific metadata (IEMOCAP VAD, AI-Hub annotator votes, synthetic prosody ...)."""


def _problems_message(what: str, path: Path, problems: list[str]) -> str:
    shown = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{len(problems)} {what} in {path}:\n  {shown}{more}"


def read_manifest(
    path: str | Path,
    labels: Iterable[str] | None = EMOTIONS,
    *,
    check_audio: bool = True,
) -> list[Example]:
    """Parse a JSON-lines manifest into :class:`Example` objects (audio paths made absolute).

    ``labels`` is the accepted label set (default :data:`~shared.settings.EMOTIONS`; ``None``
    accepts any). Raises :class:`ManifestError` naming the line numbers of malformed lines
    (invalid JSON, not an object, missing/empty ``audio`` or ``label``, ``"audio": null`` without
    ``text`` or ``id``, wrong field types, duplicate ids), of unknown labels, and -- when
    ``check_audio`` -- how many audio files are missing with the first few of them (text-only lines
    have none to check). Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    root = Path(os.path.abspath(path)).parent
    allowed = None if labels is None else set(labels)
    examples: list[Example] = []
    line_of: list[int] = []
    problems: list[str] = []
    bad_labels: list[str] = []
    first_line_of: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"line {lineno}: invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"line {lineno}: expected a JSON object, got {type(obj).__name__}")
                continue
            try:
                ex = _example_from_obj(obj, root)
            except ValueError as e:
                problems.append(f"line {lineno}: {e}")
                continue
            if allowed is not None and ex.label not in allowed:
                bad_labels.append(f"line {lineno}: unknown label {ex.label!r} (expected one of {sorted(allowed)})")
                continue
            if ex.id in first_line_of:
                problems.append(f"line {lineno}: duplicate id {ex.id!r} (first on line {first_line_of[ex.id]})")
                continue
            first_line_of[ex.id] = lineno
            examples.append(ex)
            line_of.append(lineno)
    if problems:
        raise ManifestError(_problems_message("malformed line(s)", path, problems))
    if bad_labels:
        raise ManifestError(_problems_message("unknown label(s)", path, bad_labels))
    if check_audio:
        missing = [
            f"line {n}: {ex.audio_path}"
            for ex, n in zip(examples, line_of, strict=True)
            if ex.audio_path is not None and not ex.audio_path.is_file()
        ]
        if missing:
            raise ManifestError(_problems_message("missing audio file(s)", path, missing))
    return examples


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return str(value)


def _example_from_obj(obj: dict[str, Any], root: Path) -> Example:
    audio = obj.get("audio")
    text = _optional_str(obj, "text")
    if audio is None and "audio" in obj:  # a text-only utterance
        if text is None or not text.strip():
            raise ValueError("'audio' is null and there is no 'text' (a line needs audio, text or both)")
        if not (_optional_str(obj, "id") or "").strip():
            raise ValueError("a text-only line (\"audio\": null) needs an 'id'")
    elif not isinstance(audio, str) or not audio.strip():
        raise ValueError("missing or empty 'audio' field (a text-only line has \"audio\": null)")
    label = obj.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ValueError("missing or empty 'label' field")
    extra = obj.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"field 'extra' must be an object, got {type(extra).__name__}")
    extra = dict(extra)
    extra.update({k: v for k, v in obj.items() if k not in _KNOWN_KEYS})
    audio_path = None if audio is None else Path(audio)
    if audio_path is not None and not audio_path.is_absolute():
        audio_path = root / audio_path
    split = _optional_str(obj, "split")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {list(SPLITS)}")
    return Example(
        id=_optional_str(obj, "id") or Path(audio).with_suffix("").as_posix(),
        audio_path=audio_path,
        label=label.strip(),
        text=text,
        speaker=_optional_str(obj, "speaker"),
        language=_optional_str(obj, "language"),
        split=split,
        call_id=_optional_str(obj, "call_id"),
        extra=extra,
    )


def example_to_obj(ex: Example, root: Path) -> dict[str, Any]:
    """The JSON object for ``ex``; audio relative to ``root`` when it lies inside it (``null`` for a
    text-only utterance)."""
    shown: str | None = None
    if ex.audio_path is not None:
        absolute = Path(os.path.abspath(ex.audio_path))
        try:
            shown = absolute.relative_to(root).as_posix()
        except ValueError:
            shown = str(absolute)
    obj: dict[str, Any] = {"id": ex.id, "audio": shown, "label": ex.label}
    for key in ("text", "speaker", "language", "split", "call_id"):
        value = getattr(ex, key)
        if value is not None:
            obj[key] = value
    if ex.extra:
        obj["extra"] = ex.extra
    return obj


def write_manifest(path: str | Path, examples: Iterable[Example]) -> Path:
    """Write ``examples`` as JSON lines (UTF-8, non-ASCII kept) atomically; returns the path.

    Audio paths inside the manifest's folder are written relative to it (so the folder can be
    moved as a whole), others absolute.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = Path(os.path.abspath(path)).parent
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(example_to_obj(ex, root), ensure_ascii=False, sort_keys=False))
            f.write("\n")
    tmp.replace(path)
    return path


# ---- splits ------------------------------------------------------------------------------------


def _split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder allocation of ``n`` groups; every positive ratio gets one if n allows."""
    total = float(sum(ratios))
    exact = [n * r / total for r in ratios]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    positive = [i for i, r in enumerate(ratios) if r > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(keys: Iterable[str], seed: int, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, str]:
    """Deterministically map each distinct group key to ``train``/``val``/``test``.

    Keys are ordered by a seeded SHA-256 hash (stable across platforms and NumPy versions) and cut
    by ``ratios`` (2 or 3 values: train/test or train/val/test) with largest-remainder rounding.
    """
    if len(ratios) not in (2, 3) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be 2 or 3 non-negative numbers, got {tuple(ratios)}")
    names = SPLITS if len(ratios) == 3 else ("train", "test")
    unique = sorted(set(keys))
    order = sorted(unique, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())
    result: dict[str, str] = {}
    start = 0
    for name, count in zip(names, _split_counts(len(order), ratios), strict=True):
        for key in order[start : start + count]:
            result[key] = name
        start += count
    return result


def split_examples(
    examples: Sequence[Example],
    seed: int,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    by: Literal["speaker", "call"] | None = "speaker",
) -> list[Example]:
    """Copies of ``examples`` (same order) with ``split`` set; deterministic for a given seed.

    ``by="speaker"`` keeps every speaker in one split (speaker-independent evaluation),
    ``by="call"`` every call, ``None`` splits utterances independently. Examples whose group key is
    missing form singleton groups. An explicit ``split`` already on an example is kept, and the
    other examples of its group follow the group's (majority) explicit split, so groups never
    straddle splits because of partial annotations.
    """
    if by not in ("speaker", "call", None):
        raise ValueError(f"by must be 'speaker', 'call' or None, got {by!r}")

    def key(ex: Example) -> str:
        value = ex.speaker if by == "speaker" else ex.call_id if by == "call" else None
        return f"g:{value}" if value is not None else f"u:{ex.id}"

    explicit: dict[str, Counter[str]] = defaultdict(Counter)
    for ex in examples:
        if ex.split is not None:
            explicit[key(ex)][ex.split] += 1
    fixed = {k: c.most_common(1)[0][0] for k, c in explicit.items()}
    free = [key(ex) for ex in examples if key(ex) not in fixed]
    assigned = {**assign_splits(free, seed, ratios), **fixed}
    return [replace(ex, split=ex.split or assigned[key(ex)], extra=dict(ex.extra)) for ex in examples]
