"""The graph and fusion services' own logic (Triton replaced by a fake recording its inputs)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from services.graph_gat import GraphGatService, word_spans
from shared.triton_models import FeatureRows
from services.moe_fusion import MoeFusionService
from shared.contracts import (
    ArrayPayload,
    EmotionEvent,
    GraphFeatures,
    SpeakerBaseline,
    SpeechFeatures,
    TextFeatures,
    Utterance,
    Word,
)
from shared.metrics import ServiceMetrics
from shared.redaction import redact
from shared.settings import EMOTIONS, load_settings

T, F, DT, DS = 8, 6, 4, 3


class FakeModel:
    def __init__(self, outputs):
        self.outputs, self.calls = outputs, []

    def infer(self, inputs, names):
        self.calls.append((inputs, names))
        return {n: self.outputs[n] for n in names}


def _parts(i: int, text: str, words=(), voiced=True, edges=3, t0=100.0, baseline=None):
    u = Utterance(
        call_id="c",
        utterance_id=f"c:{i:05d}",
        index=i,
        speaker="customer",
        start=1.0 + i,
        end=2.5 + i,
        text=text,
        words=[Word(text=w, start=s, end=e) for w, s, e in words],
        created_at=t0,
    )
    a = lambda x, dt=None: ArrayPayload.from_array(np.asarray(x), dt)  # noqa: E731
    mask = np.zeros(T, bool)
    mask[:3] = True
    offsets = np.zeros((T, 2), np.int32)
    offsets[1:3] = [[0, 2], [3, 5]]
    text_f = TextFeatures(
        call_id="c",
        utterance_id=u.utterance_id,
        model_version="e5",
        hidden=a(np.ones((T, DT)), "float16"),
        mask=a(mask),
        offsets=a(offsets),
        created_at=t0 + 0.05,
    )
    speech_f = SpeechFeatures(
        call_id="c",
        utterance_id=u.utterance_id,
        model_version="wb",
        frames=a(np.ones((F, DS)), "float16"),
        mask=a(np.full(F, voiced)),
        frame_times=a(np.linspace(0, 1, F * 2).reshape(F, 2), "float32"),
        created_at=t0 + 0.08,
        speaker_baseline=baseline,
    )
    graph = GraphFeatures(
        call_id="c",
        utterance_id=u.utterance_id,
        model_version="m",
        embedding=a(np.ones(5), "float32"),
        edges=edges,
        created_at=t0 + 0.1,
    )
    return {"utterance": u, "text": text_f, "speech": speech_f, "graph": graph}


def _fusion(redact_mode="none"):
    s = load_settings()
    s.events.redact = redact_mode
    svc = MoeFusionService(s)
    probs = np.full((2, 7), 0.05, np.float32)
    probs[0, EMOTIONS.index("anger")], probs[1, EMOTIONS.index("neutral")] = 0.7, 0.7
    svc.model = FakeModel({"PROBS": probs, "CA_PROBS": probs[::-1], "SP_PROBS": probs})
    svc.class_names, svc.branches, svc.model_version = list(EMOTIONS), ["ca_moe", "sp_moe"], "proposed@abc"
    svc.ctx = types.SimpleNamespace(metrics=ServiceMetrics("moe_fusion"), settings=s)
    return svc


def test_fusion_events_carry_labels_branches_latency_and_missing_modalities():
    svc = _fusion()
    baseline = SpeakerBaseline(
        utterances=3,
        mean=ArrayPayload.from_array(np.arange(DS), "float32"),
        var=ArrayPayload.from_array(np.full(DS, 2.0), "float32"),
    )
    joined = [
        _parts(0, "this is outrageous", [("this", 0.1, 0.3)], baseline=baseline),
        _parts(1, "", voiced=False, edges=0),
    ]
    angry, silent = svc.complete(joined)
    inputs, _ = svc.model.calls[0]
    assert (
        inputs["TEXT"].shape == (2, T, DT)
        and inputs["GRAPH"].shape == (2, 5)
        and set(inputs)
        == {"TEXT", "TEXT_MASK", "SPEECH", "SPEECH_MASK", "GRAPH", "SPEAKER_COUNT", "SPEAKER_MEAN", "SPEAKER_VAR"}
    )
    # the first utterance's speaker baseline goes to the model; the second has none (count 0: the prior alone)
    assert inputs["SPEAKER_COUNT"].tolist() == [[3.0], [0.0]]
    np.testing.assert_array_equal(inputs["SPEAKER_MEAN"][0], np.arange(DS))
    np.testing.assert_array_equal(inputs["SPEAKER_VAR"], [np.full(DS, 2.0), np.zeros(DS)])
    assert angry.label == "anger" and silent.label == "neutral"
    assert angry.probabilities["anger"] == pytest.approx(0.7) and set(angry.probabilities) == set(EMOTIONS)
    assert angry.branches["ca_moe"]["neutral"] == pytest.approx(0.7) and angry.branches["sp_moe"][
        "anger"
    ] == pytest.approx(0.7)
    assert angry.missing_modalities == [] and silent.missing_modalities == ["text", "speech", "graph"]
    assert (angry.speaker, angry.start, angry.end, angry.transcript) == ("customer", 1.0, 2.5, "this is outrageous")
    assert angry.latency_ms["text"] == pytest.approx(50, abs=0.2) and angry.latency_ms["graph"] == pytest.approx(
        20, abs=0.2
    )
    assert angry.latency_ms["total"] >= angry.latency_ms["fusion"] > 0
    samples = {
        (m.name, tuple(sorted(m.labels.items()))): m.value
        for fam in svc.ctx.metrics.registry.collect()
        for m in fam.samples
    }
    assert (
        samples[("emotion_events_total", (("label", "anger"), ("service", "moe_fusion"), ("speaker", "customer")))] == 1
    )


@pytest.mark.parametrize("mode, expected", [("none", "pin 4111 2222"), ("digits", "pin #### ####"), ("all", "")])
def test_events_carry_the_transcript_as_configured(mode, expected):
    svc = _fusion(mode)
    event = svc.complete([_parts(0, "pin 4111 2222"), _parts(1, "x")])[0]
    assert event.transcript == expected
    assert event.message_id == EmotionEvent.event_id(event.utterance_id, event.model_version)  # same id on a replay


@pytest.mark.parametrize(
    "said, shown",
    [
        ("my card is 4111 1111 1111 1111 thanks", "my card is [card] thanks"),
        ("card 5500-0000-0000-0004.", "card [card]."),
        ("it's 4111111111111111", "it's [card]"),
        ("call me on 555 0134 after 6", "call me on ### #### after #"),
        ("account number four one one one two", "account number ###"),
        ("oh seven nine, right", "###, right"),
        ("카드 번호는 일이삼사 오육칠팔 입니다", "카드 번호는 ### 입니다"),
        ("one day I would like two things", "one day I would like two things"),
        ("오늘 이사를 갑니다", "오늘 이사를 갑니다"),
    ],
)
def test_digit_redaction_masks_card_numbers_digit_runs_and_spoken_digits(said, shown):
    assert redact(said, "digits") == shown
    assert redact(said, "none") == said and redact(said, "all") == ""


def test_graph_service_locates_the_words_and_pads_them():
    located = word_spans(
        [
            Utterance(
                call_id="c",
                utterance_id="c:0",
                index=0,
                start=0,
                end=1,
                text="Hello, world",
                words=[Word(text="Hello,", start=0.0, end=0.4), Word(text="world", start=0.5, end=0.9)],
            ),
            Utterance(call_id="c", utterance_id="c:1", index=1, start=1, end=2, text=""),
        ]
    )
    rows = FeatureRows(
        np.zeros((2, 3, 4)),
        np.ones((2, 3)),
        np.zeros((2, 3, 2)),
        np.zeros((2, 5, 4)),
        np.ones((2, 5)),
        np.zeros((2, 5, 2)),
    )
    spans = rows.graph_gat_request(located)
    assert "SPEAKER_MEAN" not in spans, "no baseline given: the model's prior alone"
    assert spans["WORD_SPANS"].shape == (2, 2, 4) and spans["WORD_SPANS"].dtype == np.float64
    assert spans["WORD_COUNT"].ravel().tolist() == [2, 0]
    assert spans["WORD_SPANS"][0, 1].tolist() == [7, 12, 0.5, 0.9]
    svc = GraphGatService(load_settings())
    svc.model = FakeModel({"GRAPH": np.ones((1, 5), np.float32), "EDGES": np.array([[4]], np.int32)})
    svc.model_version = "proposed@abc"
    (g,) = svc.complete([_parts(0, "hi there", [("hi", 0.0, 0.2)])])
    assert g.edges == 4 and g.embedding.to_array().shape == (5,) and g.utterance_id == "c:00000"
