"""Word and character error rates of transcripts against reference text.

:func:`normalise` makes a transcript and its reference comparable (lower case, numbers as words,
``#`` as "pound", ``*`` as "star", no punctuation); :func:`word_error_rate` and
:func:`character_error_rate` (for Korean, whose word spacing varies between writers and Whisper)
are corpus rates: total edits over total reference words or characters. ``emotion eval`` reports
them for Whisper's transcripts, the ASR benchmarks for packed against one-by-one decoding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["character_error_rate", "edit_distance", "normalise", "word_error_rate"]

_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty", 90: "ninety"}


def _number_words(n: int) -> str:
    if n < 20:
        return _NUMBERS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens * 10] + ("" if unit == 0 else " " + _NUMBERS[unit])
    return " ".join(_NUMBERS[int(d)] for d in str(n))  # digit by digit, as prompts read them


def normalise(text: str) -> list[str]:
    """Lower case, numbers as words, ``#`` as "pound", ``*`` as "star", no punctuation."""
    text = text.lower().replace("#", " pound ").replace("*", " star ").replace("&", " and ")
    text = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", text)
    text = re.sub(r"[^\w' ]+", " ", text).replace("'", "")
    return text.split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total edits over total reference words, after :func:`normalise`."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    edits = sum(edit_distance(normalise(r), normalise(h)) for r, h in zip(references, hypotheses, strict=True))
    words = sum(len(normalise(r)) for r in references)
    return edits / max(words, 1)


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER over the characters of the words :func:`normalise` gives, spaces left out: the
    measure for Korean, whose word spacing varies between writers (and Whisper)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    chars = [("".join(normalise(r)), "".join(normalise(h))) for r, h in zip(references, hypotheses, strict=True)]
    return sum(edit_distance(list(r), list(h)) for r, h in chars) / max(sum(len(r) for r, _ in chars), 1)
