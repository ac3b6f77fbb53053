"""Emotion label names: the canonical set and the spellings the corpora use for it.

The canonical labels are :data:`shared.settings.EMOTIONS` (the AI-Hub set, in logit order).
:func:`normalize_emotion` maps Korean names (분노, 슬픔, 중립, 행복, 공포, 혐오, 놀람 and common
synonyms) and English ones in any case (``Angry``, ``anger``, ``SAD``, ``happy`` ...) to them.
"""

from __future__ import annotations

import unicodedata

from shared.settings import EMOTIONS

__all__ = ["EMOTIONS", "EMOTION_ALIASES", "normalize_emotion"]

EMOTION_ALIASES: dict[str, str] = {
    # anger
    "anger": "anger",
    "angry": "anger",
    "ang": "anger",
    "분노": "anger",
    "화남": "anger",
    "화": "anger",
    # sadness
    "sadness": "sadness",
    "sad": "sadness",
    "슬픔": "sadness",
    "슬프다": "sadness",
    # neutral
    "neutral": "neutral",
    "neu": "neutral",
    "중립": "neutral",
    "평온": "neutral",
    "보통": "neutral",
    # happiness
    "happiness": "happiness",
    "happy": "happiness",
    "hap": "happiness",
    "joy": "happiness",
    "행복": "happiness",
    "기쁨": "happiness",
    # fear
    "fear": "fear",
    "fearful": "fear",
    "fea": "fear",
    "scared": "fear",
    "공포": "fear",
    "두려움": "fear",
    # disgust
    "disgust": "disgust",
    "disgusted": "disgust",
    "dis": "disgust",
    "혐오": "disgust",
    # surprise
    "surprise": "surprise",
    "surprised": "surprise",
    "sur": "surprise",
    "놀람": "surprise",
}
"""Lower-cased spelling -> canonical label."""

assert set(EMOTION_ALIASES.values()) == set(EMOTIONS)


def normalize_emotion(name: str | None) -> str | None:
    """The canonical label for ``name`` (case-, width- and whitespace-insensitive), or ``None``.

    ``None`` is returned for empty values and for spellings that are not known aliases.
    """
    if name is None:
        return None
    key = unicodedata.normalize("NFKC", str(name)).strip().lower()
    return EMOTION_ALIASES.get(key) if key else None
