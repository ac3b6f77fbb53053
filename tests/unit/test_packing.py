"""Packing utterances into Whisper windows: the plan, the audio and the words given back
(the real Whisper on packed speech: tests/models/test_offline_bundle.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training.encoders.asr import Word, _join_words
from training.encoders.packing import PackedWindow, PackingOptions, assemble, plan_windows, split_words

OPTIONS = PackingOptions(max_window_s=10.0, gap_s=0.6, slack_s=0.15)


def test_rows_of_one_language_fill_windows_in_arrival_order():
    windows = plan_windows([3.0, 2.0, 4.0, 1.0], ["en"] * 4, OPTIONS)
    # 3 + 0.6 + 2 + 0.6 + 4 = 10.2 > 10: the third row opens the second window
    assert [w.rows for w in windows] == [(0, 1), (2, 3)]
    assert windows[0].offsets == (0.0, 3.6) and windows[1].offsets == (0.0, 4.6)
    assert windows[0].durations == (3.0, 2.0) and windows[0].length_s == pytest.approx(5.6)
    # a row that fits exactly (no gap after the last) still goes in
    assert [w.rows for w in plan_windows([4.7, 4.7], ["en", "en"], OPTIONS)] == [(0, 1)]


def test_languages_never_share_a_window():
    windows = plan_windows([1.0, 1.0, 1.0, 1.0], ["en", "ko", "en", "ko"], OPTIONS)
    assert [(w.language, w.rows) for w in windows] == [("en", (0, 2)), ("ko", (1, 3))]


def test_an_utterance_longer_than_a_window_goes_alone_and_the_others_carry_on():
    windows = plan_windows([2.0, 12.0, 2.0, 2.0], ["en"] * 4, OPTIONS)
    assert [w.rows for w in windows] == [(0, 2, 3), (1,)]
    assert plan_windows([12.0], ["en"], OPTIONS)[0].rows == (0,)


def test_one_waiting_utterance_makes_a_window_of_its_own():
    (window,) = plan_windows([3.0], ["en"], OPTIONS)
    assert window.rows == (0,) and window.offsets == (0.0,)
    assert plan_windows([], [], OPTIONS) == []
    with pytest.raises(ValueError, match="2 durations for 1 languages"):
        plan_windows([1.0, 2.0], ["en"], OPTIONS)


def test_options_are_checked():
    for bad in ({"max_window_s": 31.0}, {"gap_s": 0.2, "slack_s": 0.15}, {"slack_s": -0.1}):
        with pytest.raises(ValueError):
            PackingOptions(**bad)


def test_assemble_lays_each_row_at_its_offset_with_silent_gaps():
    a = np.full(16000, 0.5, np.float32)  # 1 s
    b = np.full(8000, -0.25, np.float32)  # 0.5 s
    window = plan_windows([1.0, 0.5], ["en", "en"], OPTIONS)[0]
    audio = assemble(window, [a, b])
    assert audio.dtype == np.float32 and audio.size == round(1.6 * 16000) + 8000
    assert (audio[:16000] == 0.5).all() and (audio[16000 : round(1.6 * 16000)] == 0).all()
    assert (audio[round(1.6 * 16000) :] == -0.25).all()


WINDOW = PackedWindow(rows=(4, 7), offsets=(0.0, 3.6), durations=(3.0, 2.0), language="en")


def test_words_go_back_to_their_utterance_on_its_own_clock():
    words = [Word("hello", 0.1, 0.5, 0.9), Word("there", 0.6, 1.0, 0.8), Word("press", 3.7, 4.1, 0.95)]
    first, second = split_words(words, WINDOW, OPTIONS.slack_s)
    assert [(w.text, w.start, w.end) for w in first] == [("hello", 0.1, 0.5), ("there", 0.6, 1.0)]
    assert [(w.text, round(w.start, 6), round(w.end, 6), w.probability) for w in second] == [("press", 0.1, 0.5, 0.95)]


def test_a_word_straddling_a_gap_goes_where_it_ends_clipped_to_the_utterance():
    # utterance 0 ends at 3.0 and utterance 1 starts at 3.6; Whisper's times drift into the gap
    late = Word("door", 2.8, 3.1, 0.9)  # ends within the slack after utterance 0
    early = Word("one", 3.5, 3.9, 0.9)  # starts in the gap, ends in utterance 1
    # the first word after a silence, stretched back over the whole gap: it still ends where it was said
    stretched = Word("is", 2.4, 3.9, 0.9)
    trailing = Word("off", 2.9, 3.3, 0.9)  # starts in utterance 0, ends in the gap
    first, second = split_words([late, trailing, stretched, early], WINDOW, OPTIONS.slack_s)
    assert [(w.text, w.start, w.end) for w in first] == [("door", 2.8, 3.0), ("off", 2.9, 3.0)]
    assert [(w.text, w.start, round(w.end, 6)) for w in second] == [("is", 0.0, 0.3), ("one", 0.0, 0.3)]


def test_a_word_inside_a_gap_is_text_whisper_invented_and_is_dropped():
    invented = Word("Thank you.", 3.2, 3.4, 0.3)  # 3.15 .. 3.45 lies beyond both utterances' slack
    first, second = split_words([invented], WINDOW, OPTIONS.slack_s)
    assert first == [] and second == []
    # a word after the last utterance is invented too
    assert split_words([Word("bye", 5.9, 6.3, 0.5)], WINDOW, OPTIONS.slack_s) == [[], []]
    # a zero-length word sits where it is: inside the slack it belongs, in the gap it does not
    kept, _ = split_words([Word("a", 3.1, 3.1, 0.5)], WINDOW, OPTIONS.slack_s)
    assert [(w.start, w.end) for w in kept] == [(3.0, 3.0)]
    assert split_words([Word("a", 3.3, 3.3, 0.5)], WINDOW, OPTIONS.slack_s) == [[], []]


def test_utterance_text_joins_words_with_the_languages_spacing():
    words = [Word("Press", 0, 1, 1), Word("one.", 1, 2, 1)]
    assert _join_words(words, "en") == "Press one."
    assert _join_words([Word("今日は", 0, 1, 1), Word("晴れ", 1, 2, 1)], "ja") == "今日は晴れ"
