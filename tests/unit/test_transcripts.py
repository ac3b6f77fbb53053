"""Error rates of transcripts (training.transcripts) and their report in `emotion eval`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from training.data.manifest import Example
from training.evaluate import transcript_scores
from training.transcripts import character_error_rate, word_error_rate


def test_error_rates_count_words_and_characters_after_one_normalisation():
    assert word_error_rate(["Press 1 now."], ["press one now"]) == 0
    assert word_error_rate(["a b c d"], ["a x c"]) == 0.5  # one substitution, one deletion
    # Korean: the spacing differs, the characters do not; one character of six is wrong
    assert word_error_rate(["결제 카드를"], ["결제카드를"]) == 1.0
    assert character_error_rate(["결제 카드를"], ["결제카드를"]) == 0
    assert character_error_rate(["결제 카드를"], ["결재 카드를"]) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="references for"):
        word_error_rate(["a"], [])


def test_eval_scores_the_transcripts_of_spoken_lines_with_text_only():
    clip = Path("/corpus/a.wav")
    examples = [
        Example("spoken", clip, "anger", "I want my money back"),
        Example("spoken-no-text", clip, "neutral", None),  # nothing to score against
        Example("text-only", None, "sadness", "I am so tired"),  # no transcript: Whisper never heard it
    ]
    records = [
        SimpleNamespace(id="spoken", asr_text="I want my honey back"),
        SimpleNamespace(id="spoken-no-text", asr_text="hello"),
        SimpleNamespace(id="text-only", asr_text=""),
    ]
    scores = transcript_scores(examples, records)
    assert scores == {"n": 1, "wer": 0.2, "cer": pytest.approx(1 / 16)}
    assert transcript_scores(examples[1:], records[1:]) is None
