"""The published JSON Schemas of the message contracts: equal to the code, and they accept and
refuse what the services' own decoder accepts and refuses."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from services.contract_schemas import TOPIC_FIELD, main, schema_file_name, schema_text
from shared.contracts import (
    CONTRACTS,
    ArrayPayload,
    AudioChunk,
    ContractError,
    DeadLetter,
    EmotionEvent,
    GraphFeatures,
    SpeakerBaseline,
    SpeechFeatures,
    SpeechFeaturesV1,
    TextFeatures,
    Utterance,
    Word,
    decode,
    json_schema,
)
from shared.settings import TopicSettings

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "contracts"


def _array(shape, dtype="float32") -> ArrayPayload:
    return ArrayPayload.from_array(np.zeros(shape, dtype))


IDS = {"call_id": "call-1", "utterance_id": "call-1:00000"}
EXAMPLES = {
    AudioChunk: AudioChunk(
        call_id="call-1",
        seq=0,
        sample_rate=8000,
        channels=2,
        channel_roles=["agent", "customer"],
        pcm=_array(320, "int16"),
        end_of_call=True,
        language="en",
    ),
    Utterance: Utterance(
        **IDS,
        index=0,
        speaker="customer",
        start=0.5,
        end=1.5,
        text="hello",
        language="en",
        words=[Word(text="hello", start=0.1, end=0.6, probability=0.9)],
        audio=_array(16000, "int16"),
    ),
    TextFeatures: TextFeatures(
        **IDS,
        model_version="t@1",
        hidden=_array((128, 8), "float16"),
        mask=_array(128, "bool"),
        offsets=_array((128, 2), "int32"),
    ),
    SpeechFeaturesV1: SpeechFeaturesV1(
        **IDS,
        model_version="s@1",
        frames=_array((128, 8), "float16"),
        mask=_array(128, "bool"),
        frame_times=_array((128, 2)),
    ),
    SpeechFeatures: SpeechFeatures(
        **IDS,
        model_version="s@1",
        frames=_array((128, 8), "float16"),
        mask=_array(128, "bool"),
        frame_times=_array((128, 2)),
        speaker_baseline=SpeakerBaseline(utterances=3, mean=_array(8), var=_array(8)),
    ),
    GraphFeatures: GraphFeatures(**IDS, model_version="g@1", embedding=_array(16), edges=12),
    EmotionEvent: EmotionEvent(
        **IDS,
        speaker="agent",
        start=0.5,
        end=1.5,
        transcript="hello",
        label="anger",
        probabilities={"anger": 0.7, "neutral": 0.3},
        branches={"ca_moe": {"anger": 0.6}},
        model_version="m@1",
        missing_modalities=["graph"],
        latency_ms={"total": 12.5},
    ),
    DeadLetter: DeadLetter(
        service="asr_alignment",
        reason="malformed JSON",
        error_type="ContractError",
        source_topic="calls.audio",
        partition=0,
        offset=7,
        source_key="call-1",
        payload_b64="e30=",
        payload_bytes=2,
    ),
}


def test_the_published_schemas_are_the_code_s():
    """docs/contracts holds exactly one file per contract version, equal to what the code says
    (after a contract change: `emotion contracts --out docs/contracts`)."""
    assert sorted(p.name for p in PUBLISHED.glob("*.json")) == sorted(schema_file_name(c) for c in CONTRACTS.values())
    for contract in CONTRACTS.values():
        assert (PUBLISHED / schema_file_name(contract)).read_text() == schema_text(contract), contract.contract


def test_every_contract_has_an_example_and_a_topic():
    assert set(EXAMPLES) == set(CONTRACTS.values())
    assert set(TOPIC_FIELD) == {name for name, _ in CONTRACTS}
    assert set(TOPIC_FIELD.values()) <= set(TopicSettings.model_fields)


@pytest.mark.parametrize("contract", list(EXAMPLES), ids=lambda c: f"{c.contract}-v{c.version}")
def test_a_schema_accepts_what_the_decoder_accepts_and_refuses_what_it_refuses(contract):
    validator = jsonschema.Draft202012Validator(json_schema(contract))
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    message = json.loads(EXAMPLES[contract].encode())
    assert list(validator.iter_errors(message)) == []
    assert decode(json.dumps(message).encode(), contract) == EXAMPLES[contract]

    def refused(broken: dict, why: str) -> None:
        assert list(validator.iter_errors(broken)), f"the schema accepts {why}"
        with pytest.raises(ContractError):
            decode(json.dumps(broken).encode(), contract)

    refused({**message, "contract": "something_else"}, "another contract's name")
    unknown = 1 + max(v for name, v in CONTRACTS if name == contract.contract)
    refused({**message, "v": unknown}, "a version that does not exist")
    refused({**message, "surprise": 1}, "a field the contract does not have")
    required = [k for k in json_schema(contract)["required"] if k not in ("contract", "v")]
    refused({k: v for k, v in message.items() if k != required[0]}, f"a message without {required[0]}")
    arrays = [k for k, v in message.items() if isinstance(v, dict) and "dtype" in v]
    if arrays:
        refused({**message, arrays[0]: {**message[arrays[0]], "dtype": "complex64"}}, "an unsupported dtype")


def test_the_command_lists_prints_and_writes_them(tmp_path, capsys):
    from argparse import Namespace

    from shared.settings import load_settings

    s = load_settings(home=tmp_path)
    assert main(Namespace(name=None, version=None, out=None), s) == 0
    listing = capsys.readouterr().out
    assert "emotion_event    1        emotions" in listing and "speech_features  2" in listing
    assert main(Namespace(name="speech_features", version=None, out=None), s) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["v"] == {
        "const": 2,
        "description": "The contract's version.",
    }
    assert main(Namespace(name="speech_features", version=9, out=None), s) == 2
    assert main(Namespace(name=None, version=None, out=tmp_path / "schemas"), s) == 0
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == sorted(p.name for p in PUBLISHED.glob("*.json"))
