"""The escalation rule (:mod:`services.escalation`) on hand-made EmotionEvents: negative runs, broken
runs, rising negative probabilities, mono calls, duplicates and arrival order."""

from __future__ import annotations

import pytest

from services.escalation import NEGATIVE_LABELS, RISING_MIN_FINAL, Escalation, detect_escalation, negative_probability
from shared.contracts import EmotionEvent
from shared.settings import EMOTIONS, Settings


def ev(
    i: int,
    label: str,
    speaker: str = "customer",
    start: float | None = None,
    negative: float | None = None,
    call: str = "c",
) -> EmotionEvent:
    """Utterance ``i`` of call ``call``; ``negative``: the probability of anger (the rest neutral),
    else 0.8 on the label and 0.2 on neutral."""
    start = float(2 * i) if start is None else start
    if negative is None:
        probs = {label: 0.8, "neutral": 0.2} if label != "neutral" else {"neutral": 1.0}
    else:
        probs = {e: 0.0 for e in EMOTIONS} | {"anger": negative, "neutral": round(1 - negative, 6)}
    return EmotionEvent(
        call_id=call,
        utterance_id=f"{call}:{i:05d}",
        speaker=speaker,
        start=start,
        end=start + 1.5,
        transcript=f"utterance {i}",
        label=label,
        probabilities=probs,
        model_version="test",
    )


def customer(labels: list[str]) -> list[EmotionEvent]:
    return [ev(i, label) for i, label in enumerate(labels)]


def test_negative_labels_come_from_the_settings():
    assert NEGATIVE_LABELS == Settings().events.negative_labels == ("anger", "disgust", "fear", "sadness")


class TestNegativeRun:
    def test_ongoing_run_among_agent_turns(self):
        events = [
            ev(0, "neutral"),
            ev(1, "anger"),
            ev(2, "neutral", "agent"),
            ev(3, "sadness"),
            ev(4, "happiness", "agent"),
            ev(5, "fear"),
        ]
        assert detect_escalation(events) == Escalation(
            "negative_run",
            "3 consecutive negative customer utterances (anger, sadness, fear) from 2.0 s",
            "c:00001",
            2.0,
            ("anger", "sadness", "fear"),
            3,
            True,
        )

    def test_past_run_is_reported_not_ongoing(self):
        esc = detect_escalation(customer(["anger", "anger", "disgust", "neutral", "happiness"]))
        assert esc is not None and esc.kind == "negative_run"
        assert not esc.ongoing and esc.length == 3 and esc.since == "c:00000" and esc.at == 0.0

    def test_the_latest_run_and_its_full_length(self):
        esc = detect_escalation(customer(["anger"] * 3 + ["neutral"] + ["fear", "anger", "disgust", "sadness"]))
        assert esc.since == "c:00004" and esc.labels == ("fear", "anger", "disgust", "sadness") and esc.length == 4
        assert esc.ongoing and esc.reason.startswith("4 consecutive negative customer utterances")

    @pytest.mark.parametrize(
        "labels",
        [
            ["anger", "anger"],  # only two
            ["anger", "surprise", "anger", "disgust"],  # surprise breaks the run
            ["anger", "anger", "neutral", "anger", "anger"],  # two runs of two
            ["happiness", "neutral", "happiness"],
            [],
        ],
    )
    def test_no_run(self, labels):
        assert detect_escalation(customer(labels)) is None

    def test_turns(self):
        events = customer(["anger", "anger", "anger"])
        assert detect_escalation(events, turns=4) is None
        assert detect_escalation(events[:2], turns=2).length == 2
        with pytest.raises(ValueError):
            detect_escalation(events, turns=0)

    def test_negative_labels_can_be_chosen(self):
        events = customer(["surprise", "surprise", "surprise"])
        assert detect_escalation(events) is None
        assert detect_escalation(events, negative={"surprise"}).labels == ("surprise",) * 3
        assert detect_escalation(customer(["fear"] * 3), negative=("anger",)) is None

    def test_only_the_judged_speaker_counts(self):
        events = [ev(i, "anger", "agent") for i in range(5)] + [ev(9, "sadness")]
        assert detect_escalation(events) is None
        agent = detect_escalation(events, speaker="agent")
        assert agent.length == 5 and "negative agent utterances" in agent.reason
        assert agent.ongoing  # up to the agent's last utterance: the customer's are not judged

    def test_a_call_with_only_the_agent_so_far_is_calm(self):
        assert detect_escalation([ev(i, "anger", "agent") for i in range(4)]) is None


class TestRising:
    def test_rising_negative_probability(self):
        events = [ev(0, "neutral", negative=0.1), ev(1, "neutral", negative=0.3), ev(2, "anger", negative=0.55)]
        esc = detect_escalation(events)
        assert esc is not None and esc.kind == "rising" and esc.ongoing
        assert esc.since == "c:00000" and esc.length == 3 and esc.labels == ("neutral", "neutral", "anger")
        assert "negative probability rising 0.10 -> 0.55 over 3 customer utterances from 0.0 s" == esc.reason

    @pytest.mark.parametrize(
        "probs",
        [
            [0.1, 0.3, 0.45],  # ends too low
            [0.3, 0.2, 0.6],  # not rising at every step
            [0.3, 0.3, 0.6],  # flat is not rising
            [0.2, 0.6],  # too short
        ],
    )
    def test_no_rising(self, probs):
        assert detect_escalation([ev(i, "neutral", negative=p) for i, p in enumerate(probs)]) is None

    def test_ends_exactly_at_the_threshold(self):
        probs = [0.1, 0.2, RISING_MIN_FINAL]
        assert detect_escalation([ev(i, "neutral", negative=p) for i, p in enumerate(probs)]).kind == "rising"
        assert detect_escalation([ev(i, "neutral", negative=p) for i, p in enumerate(probs)], min_final=0.6) is None

    def test_longest_rising_stretch_then_a_fall(self):
        probs = [0.4, 0.05, 0.1, 0.2, 0.3, 0.49, 0.6, 0.2]
        esc = detect_escalation([ev(i, "neutral", negative=p) for i, p in enumerate(probs)])
        assert esc.kind == "rising" and esc.since == "c:00001" and esc.length == 6 and not esc.ongoing
        assert "0.05 -> 0.60 over 6" in esc.reason

    def test_ongoing_rising_wins_over_a_past_run(self):
        events = customer(["anger", "anger", "anger", "neutral"]) + [
            ev(4, "neutral", negative=0.1),
            ev(5, "neutral", negative=0.3),
            ev(6, "neutral", negative=0.5),
        ]
        esc = detect_escalation(events)
        assert esc.kind == "rising" and esc.ongoing and esc.since == "c:00003"  # neutral {"neutral": 1.0}: 0.0

    def test_a_run_wins_over_a_rising_trend_when_both_are_ongoing(self):
        events = [ev(0, "anger", negative=0.6), ev(1, "anger", negative=0.7), ev(2, "anger", negative=0.8)]
        assert detect_escalation(events).kind == "negative_run"

    def test_negative_probability(self):
        assert negative_probability(ev(0, "neutral", negative=0.3)) == pytest.approx(0.3)
        bare = ev(0, "fear").model_copy(update={"probabilities": {}})
        assert negative_probability(bare) == 1.0 and negative_probability(bare, negative={"anger"}) == 0.0


class TestCalls:
    def test_mono_calls_are_judged_on_every_utterance(self):
        esc = detect_escalation([ev(i, "sadness", "mono") for i in range(3)])
        assert esc is not None and esc.length == 3 and esc.reason.startswith("3 consecutive negative utterances")

    def test_duplicates_count_once_and_the_last_copy_wins(self):
        events = [ev(0, "anger"), ev(0, "anger"), ev(1, "anger")]
        assert detect_escalation(events) is None
        relabelled = customer(["anger", "anger", "neutral"]) + [ev(2, "disgust")]  # a newer model's label
        assert detect_escalation(relabelled).labels == ("anger", "anger", "disgust")
        calmed = customer(["anger", "anger", "disgust"]) + [ev(2, "neutral")]
        assert detect_escalation(calmed) is None

    def test_time_order_not_arrival_order(self):
        late_calm = ev(9, "neutral", start=1.0)  # arrives last, happened first
        events = [ev(1, "anger", start=5), ev(2, "disgust", start=8), ev(3, "fear", start=11), late_calm]
        esc = detect_escalation(events)
        assert esc.length == 3 and esc.since == "c:00001" and esc.ongoing
        assert detect_escalation(list(reversed(events))) == esc
        early_calm = ev(4, "neutral", start=9.0)  # breaks the run in time, though it arrives last
        assert detect_escalation(events + [early_calm]) is None
        late = detect_escalation(events + [ev(4, "neutral", start=14.0)])
        assert late.length == 3 and not late.ongoing

    def test_ties_on_start_are_broken_by_end_then_utterance_id(self):
        a = ev(1, "anger", start=2.0)
        b = ev(2, "neutral", start=2.0).model_copy(update={"end": 2.5})  # ends first: comes first
        events = [a, b, ev(3, "anger", start=5.0), ev(4, "anger", start=7.0)]
        esc = detect_escalation(events)
        assert esc.since == "c:00001" and esc.length == 3
