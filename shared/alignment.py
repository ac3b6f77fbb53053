"""Whisper's words and their spans: the alignment half of the time-aligned graph, without torch.

Whisper gives each recognised word a time span; :func:`timed_word_spans` locates each word in the
transcript (its ``[start, end)`` characters), so that text tokens, through their own character
spans, can be joined to the speech frames inside their words' times
(:func:`training.models.time_aligned_edges`). :func:`words_to_json` / :func:`words_from_json`
are the words' wire format (the ``asr`` Triton model's ``WORDS`` output). Kept free of torch so
that light processes (the services, ``emotion consume``) can import it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

WordSpan = tuple[int, int, float, float]
"""``(char_start, char_end, t_start, t_end)``: a word's ``[start, end)`` characters in the
transcript and its ``[start, end]`` seconds in the utterance."""


# ---- words -> character spans ------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Lower-case ``text`` character by character, keeping its length (so indices still match)."""
    return "".join(low if len(low := c.lower()) == 1 else c for c in text)


def _strip_punctuation(word: str) -> str:
    """Drop leading/trailing punctuation and symbols (Whisper glues them to words)."""
    keep = lambda c: not unicodedata.category(c).startswith(("P", "S"))  # noqa: E731
    start, end = 0, len(word)
    while start < end and not keep(word[start]):
        start += 1
    while end > start and not keep(word[end - 1]):
        end -= 1
    return word[start:end]


def word_char_spans(transcript: str, words: Sequence[str]) -> list[tuple[int, int] | None]:
    """Character span ``[start, end)`` of each ASR word in ``transcript``, aligned with ``words``.

    Whisper words carry leading spaces and punctuation (``" Hello,"``); each word is stripped of
    whitespace and searched case-insensitively from the end of the previous match (left to right).
    When the word with its punctuation is not found, the search is retried without the surrounding
    punctuation.  A word that cannot be found (or is empty) gets ``None`` and the search position
    does not move, so one ASR/transcript mismatch does not derail the words after it.
    """
    haystack = _fold(transcript)
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for word in words:
        span = None
        stripped = word.strip()
        for candidate in dict.fromkeys((stripped, _strip_punctuation(stripped))):
            if not candidate:
                continue
            pos = haystack.find(_fold(candidate), cursor)
            if pos >= 0:
                span = (pos, pos + len(candidate))
                break
        spans.append(span)
        if span is not None:
            cursor = span[1]
    return spans


def _word_fields(word: Any) -> tuple[str, float, float]:
    """``(text, start, end)`` of a Whisper word given as an object (``training.encoders.asr.Word``,
    ``shared.contracts.Word``), a mapping or a ``(text, start, end)`` tuple."""
    if isinstance(word, Mapping):
        return str(word["text"]), float(word["start"]), float(word["end"])
    if isinstance(word, (tuple, list)):
        text, start, end = word[:3]
        return str(text), float(start), float(end)
    return str(word.text), float(word.start), float(word.end)


def timed_word_spans(transcript: str, words: Sequence[Any]) -> list[WordSpan]:
    """The words found in ``transcript`` as ``(char_start, char_end, t_start, t_end)`` (input of
    :func:`time_aligned_edges`); words that cannot be located are left out."""
    fields = [_word_fields(w) for w in words]
    spans = word_char_spans(transcript, [text for text, _, _ in fields])
    return [(s[0], s[1], start, end) for s, (_, start, end) in zip(spans, fields, strict=True) if s is not None]


def words_to_json(words: Sequence[Any]) -> str:
    """Words (objects with ``text``, ``start``, ``end``, ``probability``, or such mappings) -> the
    ``WORDS`` JSON text: a list of ``{"text", "start", "end", "probability"}``, seconds from the
    start of the utterance."""

    def fields(w: Any) -> dict[str, Any]:
        if isinstance(w, Mapping):
            return {k: w[k] for k in ("text", "start", "end", "probability")}
        return {"text": w.text, "start": w.start, "end": w.end, "probability": w.probability}

    return json.dumps([fields(w) for w in words], ensure_ascii=False)


def words_from_json(value: bytes | str) -> list[dict[str, Any]]:
    """One ``WORDS`` element -> a list of ``{"text", "start", "end", "probability"}``."""
    return json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)


# ---- the time-aligned graph ---------------------------------------------------------------------------


def time_aligned_adjacency(
    token_offsets: np.ndarray,
    token_mask: np.ndarray,
    word_spans: Sequence[WordSpan] | np.ndarray,
    frame_times: np.ndarray,
    frame_mask: np.ndarray,
    rule: str = "center",
) -> np.ndarray:
    """The time-aligned graph of one utterance as a bool ``[T, F]`` adjacency: cell ``(i, j)`` is an
    edge between token ``i`` and frame ``j``.

    * Token ``i`` (valid: ``token_mask[i]`` and a non-empty ``[start, end)`` offset; special and
      padding tokens have ``(0, 0)``) belongs to every word whose character span overlaps its own
      (a sub-word token to its word; a token spanning two words to both).
    * Frame ``j`` (valid: ``frame_mask[j]``) belongs to a word when, with ``rule="center"``, the
      frame's centre ``(start + end) / 2`` lies in the word's closed interval ``[t_start, t_end]``;
      with ``rule="overlap"``, when the open intervals overlap at all.
    * Edge ``(i, j)`` when token ``i`` and frame ``j`` share a word.  No words, no valid tokens or
      no valid frames gives no edge; frames outside every word get no edge.
    """
    offsets = np.asarray(token_offsets, np.int64).reshape(-1, 2)
    t_valid = np.asarray(token_mask, bool).reshape(-1) & (offsets[:, 1] > offsets[:, 0])
    times = np.asarray(frame_times, np.float64).reshape(-1, 2)
    f_valid = np.asarray(frame_mask, bool).reshape(-1)
    spans = np.asarray(word_spans, np.float64).reshape(-1, 4)
    if not len(spans) or not t_valid.any() or not f_valid.any():
        return np.zeros((len(t_valid), len(f_valid)), bool)
    c_start, c_end, w_start, w_end = spans.T
    w_valid = (c_end > c_start) & (w_end >= w_start)
    token_word = (
        t_valid[:, None] & w_valid[None, :] & (offsets[:, :1] < c_end[None, :]) & (c_start[None, :] < offsets[:, 1:])
    )  # [T, W]
    if rule == "center":
        centre = times.mean(1, keepdims=True)
        frame_word = (w_start[None, :] <= centre) & (centre <= w_end[None, :])
    elif rule == "overlap":
        frame_word = (times[:, :1] < w_end[None, :]) & (w_start[None, :] < times[:, 1:])
    else:
        raise ValueError(f"unknown edge rule {rule!r}")
    frame_word &= f_valid[:, None]  # [F, W]
    return token_word.astype(np.float32) @ frame_word.T.astype(np.float32) > 0  # [T, F]
