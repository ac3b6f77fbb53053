import json

import numpy as np
import pytest

from shared.contracts import (
    CONTRACTS,
    ArrayPayload,
    AudioChunk,
    ContractError,
    DeadLetter,
    EmotionEvent,
    TextFeatures,
    Utterance,
    Word,
    decode,
)


def _utterance(**kw):
    base = dict(
        call_id="c1",
        utterance_id="c1/0",
        index=0,
        speaker="customer",
        start=1.0,
        end=2.5,
        text="hello there",
        words=[Word(text="hello", start=0.0, end=0.4), Word(text="there", start=0.5, end=0.9)],
    )
    base.update(kw)
    return Utterance(**base)


def test_array_payload_roundtrip_keeps_dtype_shape_and_values():
    for a in (
        np.arange(12, dtype=np.int16).reshape(3, 4),
        np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32),
        np.array([True, False, True]),
    ):
        back = ArrayPayload.from_array(a).to_array()
        assert back.dtype == a.dtype and back.shape == a.shape
        np.testing.assert_array_equal(back, a)


def test_array_payload_casts_when_asked():
    p = ArrayPayload.from_array(np.ones((2, 2), dtype=np.float32), "float16")
    assert p.dtype == "float16" and p.to_array().dtype == np.float16


def test_array_payload_with_wrong_byte_count_is_a_contract_error():
    p = ArrayPayload.from_array(np.zeros(4, dtype=np.float32))
    bad = ArrayPayload(dtype="float32", shape=[5], data=p.data)
    with pytest.raises(ContractError, match=r"has 16 bytes but dtype float32 and shape \[5\] need 20"):
        bad.to_array()


def test_every_contract_roundtrips_through_bytes():
    u = _utterance(audio=ArrayPayload.from_array(np.zeros(160, dtype=np.int16)))
    back = decode(u.encode())
    assert back == u and isinstance(back, Utterance)
    e = EmotionEvent(
        call_id="c",
        utterance_id="c/0",
        start=0,
        end=1,
        transcript="x",
        label="anger",
        probabilities={"anger": 0.9, "neutral": 0.1},
        model_version="m@1",
    )
    assert decode(e.encode()) == e
    assert len(CONTRACTS) >= 7


def test_key_is_the_call_id_so_a_call_keeps_its_order():
    assert _utterance(call_id="call-42").key == b"call-42"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty payload"),
        (None, "empty payload"),
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe\x00", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"v": 1}', "missing 'contract'"),
        (b'{"contract": "utterance", "v": 99}', "unknown contract 'utterance' version 99"),
        (b'{"contract": "nope", "v": 1}', "unknown contract 'nope'"),
    ],
)
def test_decode_rejects_bad_messages_with_a_clear_reason(raw, reason):
    with pytest.raises(ContractError) as err:
        decode(raw)
    assert reason in err.value.reason


def test_missing_and_invalid_fields_are_named():
    obj = json.loads(_utterance().encode())
    del obj["call_id"]
    obj["start"] = -3
    with pytest.raises(ContractError) as err:
        decode(json.dumps(obj).encode())
    assert "call_id" in err.value.reason and "start" in err.value.reason


def test_unknown_fields_are_rejected():
    obj = json.loads(_utterance().encode())
    obj["surprise"] = 1
    with pytest.raises(ContractError, match="surprise"):
        decode(json.dumps(obj).encode())


def test_expected_contract_is_enforced():
    chunk = AudioChunk(
        call_id="c", seq=0, sample_rate=8000, channels=1, pcm=ArrayPayload.from_array(np.zeros(8, np.int16))
    )
    with pytest.raises(ContractError, match="expected a utterance message, got audio_chunk"):
        decode(chunk.encode(), Utterance)


def test_dead_letter_and_features_validate():
    d = DeadLetter(
        service="s",
        reason="r",
        error_type="ContractError",
        source_topic="t",
        partition=0,
        offset=1,
        payload_b64="",
        payload_bytes=0,
    )
    assert decode(d.encode()) == d
    f = TextFeatures(
        call_id="c",
        utterance_id="u",
        model_version="v",
        hidden=ArrayPayload.from_array(np.zeros((128, 8), np.float16)),
        mask=ArrayPayload.from_array(np.zeros(128, bool)),
        offsets=ArrayPayload.from_array(np.zeros((128, 2), np.int32)),
    )
    assert decode(f.encode(), TextFeatures).hidden.to_array().shape == (128, 8)
