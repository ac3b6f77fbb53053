"""Transcript redaction for emotion events (``settings.events.redact``).

Callers read out card, account and phone numbers; an emotion event should not carry them.

* ``none``   -- the transcript as recognised.
* ``digits`` -- numbers masked: a card-like number (13 to 19 digits, spaces or dashes between
  them allowed) becomes ``[card]``; every other digit becomes ``#``; a run of three or more
  spoken digits ("four one one one", "oh seven", Korean "공일공 ...") becomes ``###``.  Whisper
  writes most numbers as digits, but spells short ones out, and telephone audio swings between
  the two.
* ``all``    -- no transcript at all.

Only the event's ``transcript`` is redacted: the ``utterances`` topic and the transcript cache keep
the text the encoders need, so their retention (Kafka's ``log.retention.hours``, Redis TTLs) is
the one to set when those must not hold numbers either.
"""

from __future__ import annotations

import re
from typing import Literal

RedactMode = Literal["none", "digits", "all"]

CARD = "[card]"
SPOKEN = "###"

_CARD_LIKE = re.compile(r"(?<![\d#])\d(?:[ \-]?\d){12,18}(?![\d#])")
"""13-19 digits, optionally grouped by single spaces or dashes (4111 1111 1111 1111)."""
_DIGIT = re.compile(r"\d")
_SPOKEN_EN = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|double|triple)"
_SPOKEN_KO = r"(?:공|영|일|이|삼|사|오|육|륙|칠|팔|구|하나|둘|셋|넷|다섯|여섯|일곱|여덟|아홉)"
_SPOKEN_RUN = re.compile(
    rf"(?<!\w){_SPOKEN_EN}(?:[\s,.\-]+{_SPOKEN_EN}){{2,}}(?!\w)"  # three or more English digit words
    rf"|(?<!\w){_SPOKEN_KO}(?:[\s,.\-]*{_SPOKEN_KO}){{3,}}(?!\w)",  # four or more Korean ones (이, 오, 사 are words too)
    re.IGNORECASE,
)


def redact(transcript: str, mode: RedactMode) -> str:
    """The transcript as ``mode`` shows it (see the module docstring)."""
    if mode == "none":
        return transcript
    if mode == "all":
        return ""
    if mode != "digits":
        raise ValueError(f"unknown redaction mode {mode!r}; use none, digits or all")
    text = _CARD_LIKE.sub(CARD, transcript)
    text = _DIGIT.sub("#", text)
    return _SPOKEN_RUN.sub(SPOKEN, text)
