"""Versioned message contracts for every Kafka topic.

Every message is one JSON object carrying its ``contract`` name and ``v`` (version).  Arrays
(audio, embeddings) travel as :class:`ArrayPayload` (dtype, shape, base64 bytes).  :func:`decode`
turns raw bytes into the contract's model or raises :class:`ContractError` with a reason that a
person can act on; the runtime sends such messages to the dead-letter topic with that reason.

To change a contract: add a new version class, register it in :data:`CONTRACTS`, and keep the
old one decodable until every producer has moved on.
"""

from __future__ import annotations

import base64
import inspect
import json
import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_DTYPES = {"float16", "float32", "int8", "int16", "int32", "int64", "uint8", "bool"}


class ContractError(ValueError):
    """A message that does not satisfy its contract; ``reason`` is short and human-readable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ArrayPayload(BaseModel):
    """A numpy array on the wire: little-endian bytes, base64-encoded."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    dtype: str = Field(json_schema_extra={"enum": sorted(_DTYPES)})
    shape: list[Annotated[int, Field(ge=0)]]
    data: str
    """The array's little-endian bytes in C order, base64-encoded."""

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in _DTYPES:
            raise ValueError(f"unsupported dtype {v!r}; expected one of {sorted(_DTYPES)}")
        return v

    @classmethod
    def from_array(cls, array: np.ndarray, dtype: str | None = None) -> "ArrayPayload":
        a = np.ascontiguousarray(array, dtype=np.dtype(dtype) if dtype else None)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dt, copy=False)
        return cls(dtype=str(a.dtype), shape=list(a.shape), data=base64.b64encode(a.tobytes()).decode("ascii"))

    def to_array(self) -> np.ndarray:
        try:
            raw = base64.b64decode(self.data, validate=True)
        except ValueError as exc:
            raise ContractError(f"array data is not valid base64: {exc}") from exc
        dt = np.dtype(self.dtype).newbyteorder("<")
        expected = int(np.prod(self.shape, dtype=np.int64)) * dt.itemsize
        if len(raw) != expected:
            raise ContractError(
                f"array data has {len(raw)} bytes but dtype {self.dtype} and shape {self.shape} need {expected}"
            )
        return np.frombuffer(raw, dtype=dt).reshape(self.shape)


class Contract(BaseModel):
    """Base of every message: the contract name and version, a unique id and a creation time."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    contract: ClassVar[str]
    version: ClassVar[int]

    v: int = 1
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    """Unique per message (an emotion event's is idempotent: :meth:`EmotionEvent.event_id`)."""
    created_at: float = Field(default_factory=time.time)
    """When the message was made: seconds since the Unix epoch."""

    def encode(self) -> bytes:
        body = self.model_dump(mode="json")
        return json.dumps({"contract": self.contract, **body}, separators=(",", ":")).encode("utf-8")

    @property
    def key(self) -> bytes:
        """Kafka key: the call id, so that every message of a call keeps its order on one partition."""
        return str(getattr(self, "call_id", self.message_id)).encode("utf-8")


Speaker = Literal["agent", "customer", "mono"]


class AudioChunk(Contract):
    """``calls.audio``: a piece of a call's audio, in order (``seq``) within the call."""

    contract: ClassVar[str] = "audio_chunk"
    version: ClassVar[int] = 1

    call_id: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0)
    sample_rate: int = Field(ge=4000, le=192_000)
    channels: int = Field(ge=1, le=2)
    channel_roles: list[Speaker] = Field(default_factory=lambda: ["mono"])
    pcm: ArrayPayload
    """Interleaved samples, int16 or float32, ``[samples * channels]``."""
    end_of_call: bool = False
    language: str | None = None


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    text: str
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    probability: float = Field(default=1.0, ge=0, le=1)


class Utterance(Contract):
    """``utterances``: one speaker turn, with its transcript and word timestamps (seconds, relative
    to the utterance start) and its 16 kHz mono audio."""

    contract: ClassVar[str] = "utterance"
    version: ClassVar[int] = 1

    call_id: str = Field(min_length=1, max_length=128)
    utterance_id: str = Field(min_length=1, max_length=200)
    index: int = Field(ge=0)
    speaker: Speaker = "mono"
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str = ""
    language: str | None = None
    words: list[Word] = Field(default_factory=list)
    audio: ArrayPayload | None = None
    audio_key: str | None = None
    """Redis key holding the same audio, when the cache was available."""


class TextFeatures(Contract):
    """``features.text``: the text encoder's last hidden state for an utterance's transcript."""

    contract: ClassVar[str] = "text_features"
    version: ClassVar[int] = 1

    call_id: str
    utterance_id: str
    model_version: str
    hidden: ArrayPayload
    """``[max_tokens, dim]`` float16."""
    mask: ArrayPayload
    offsets: ArrayPayload
    """``[max_tokens, 2]`` character span of each token in the transcript."""
    cached: bool = False


class SpeakerBaseline(BaseModel):
    """What a speaker's voice has sounded like in this call before an utterance: the pooled mean and
    variance of the speech encoder frames of the same speaker's earlier utterances (at most
    ``models.speaker_window`` of them; ``shared.speaker_norm.FrameStatistics``). The fusion model
    blends it with its prior and z-scores the utterance's frames with it; ``utterances`` = 0 (the
    first utterance of a speaker) means the prior alone."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    utterances: int = Field(ge=0)
    mean: ArrayPayload
    """``[dim]`` float32."""
    var: ArrayPayload
    """``[dim]`` float32."""


class SpeechFeaturesV1(Contract):
    """``features.speech`` version 1: the speech encoder's frames for an utterance's audio."""

    contract: ClassVar[str] = "speech_features"
    version: ClassVar[int] = 1

    call_id: str
    utterance_id: str
    model_version: str
    frames: ArrayPayload
    mask: ArrayPayload
    frame_times: ArrayPayload
    cached: bool = False

    @property
    def baseline(self) -> SpeakerBaseline | None:
        """Version 1 has no speaker baseline: the model uses its prior alone."""
        return None


class SpeechFeatures(SpeechFeaturesV1):
    """``features.speech`` version 2: version 1 plus the speaker's baseline before this utterance."""

    version: ClassVar[int] = 2

    v: int = 2
    speaker_baseline: SpeakerBaseline | None = None

    @property
    def baseline(self) -> SpeakerBaseline | None:
        return self.speaker_baseline


class GraphFeatures(Contract):
    """``features.graph``: the GAT embedding of the time-aligned token/frame graph."""

    contract: ClassVar[str] = "graph_features"
    version: ClassVar[int] = 1

    call_id: str
    utterance_id: str
    model_version: str
    embedding: ArrayPayload
    edges: int = Field(ge=0)


class EmotionEvent(Contract):
    """``emotions``: the fused emotion of one utterance.

    Delivery is at-least-once: after a crash or a failover an utterance's event may be published
    again.  Its ``message_id`` is :meth:`event_id` (the utterance and the model version), so a
    repeat carries the same id and consumers keep the first event of each id."""

    contract: ClassVar[str] = "emotion_event"
    version: ClassVar[int] = 1

    call_id: str
    utterance_id: str
    speaker: Speaker = "mono"
    start: float
    end: float
    transcript: str
    label: str
    probabilities: dict[str, float]
    branches: dict[str, dict[str, float]] = Field(default_factory=dict)
    model_version: str
    missing_modalities: list[Literal["text", "speech", "graph"]] = Field(default_factory=list)
    latency_ms: dict[str, float] = Field(default_factory=dict)

    @staticmethod
    def event_id(utterance_id: str, model_version: str) -> str:
        """The idempotent id of the event of ``utterance_id`` by ``model_version``."""
        return uuid.uuid5(_EVENT_NAMESPACE, f"{utterance_id}|{model_version}").hex


_EVENT_NAMESPACE = uuid.UUID("0b7f3c52-9d0e-4c1a-a3f4-5e2d8c6b1a90")


class DeadLetter(Contract):
    """``deadletter``: a message a service could not process, with why."""

    contract: ClassVar[str] = "dead_letter"
    version: ClassVar[int] = 1

    service: str
    reason: str
    error_type: str
    source_topic: str
    partition: int
    offset: int
    source_key: str | None = None
    payload_b64: str
    """The original message bytes (truncated to ``payload_truncated_at`` bytes when huge)."""
    payload_bytes: int
    payload_truncated_at: int | None = None


CONTRACTS: dict[tuple[str, int], type[Contract]] = {
    (c.contract, c.version): c
    for c in (
        AudioChunk,
        Utterance,
        TextFeatures,
        SpeechFeaturesV1,
        SpeechFeatures,
        GraphFeatures,
        EmotionEvent,
        DeadLetter,
    )
}


JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(contract: type[Contract]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``contract`` as it travels: what :func:`decode` accepts,
    with the ``contract`` name and the version ``v`` pinned, so that a consumer in any language
    can validate the messages of a topic without this package."""
    schema = contract.model_json_schema(mode="validation")
    properties = schema.pop("properties")
    properties.pop("v")
    doc = inspect.cleandoc(contract.__doc__ or "")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:emotion:contract:{contract.contract}:v{contract.version}",
        "title": f"{contract.contract} v{contract.version}",
        **({"description": doc} if doc else {}),
        "type": "object",
        "properties": {
            "contract": {"const": contract.contract, "description": "The contract's name."},
            "v": {"const": contract.version, "description": "The contract's version."},
            **properties,
        },
        "required": ["contract", "v", *schema.pop("required", [])],
        "additionalProperties": schema.pop("additionalProperties", False),
        **({"$defs": schema["$defs"]} if "$defs" in schema else {}),
    }


def decode(raw: bytes | None, expect: type[Contract] | None = None) -> Contract:
    """Parse and validate one message.

    ``expect`` restricts the contract (a service reads one kind of message per topic).  Raises
    :class:`ContractError` for empty payloads, malformed JSON, unknown contract or version,
    missing or invalid fields.
    """
    if not raw:
        raise ContractError("empty payload")
    try:
        obj: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"malformed JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"message must be a JSON object, got {type(obj).__name__}")
    name, version = obj.pop("contract", None), obj.get("v")
    if name is None or version is None:
        raise ContractError("missing 'contract' or 'v' field")
    cls = CONTRACTS.get((name, version))
    if cls is None:
        known = sorted(f"{n} v{v}" for n, v in CONTRACTS)
        raise ContractError(f"unknown contract {name!r} version {version!r}; known: {', '.join(known)}")
    if expect is not None and cls.contract != expect.contract:
        raise ContractError(f"expected a {expect.contract} message, got {name}")
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
        raise ContractError(f"invalid {name} v{version}: {problems}") from exc
