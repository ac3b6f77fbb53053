"""The bad-input cases of ``test_bad_input.py``: what each one is and what it must end in.

One list for the test and for the table in ``docs/reliability.md`` (``tests/unit/test_repository.py``
checks that the table names every case and nothing else).

Outcomes:

* ``events``     -- converted and processed: the call yields one emotion event per utterance, as
  many utterances as the clean case ``same_as`` names (the same call, another format), and no
  dead letter names it;
* ``deadletter`` -- the message lands in ``deadletter`` from ``service`` with ``reason`` in its reason
  (and the rest of its call, if any, is processed);
* ``refused``    -- the publisher never sends it: ``emotion publish`` reports ``reason`` for that file
  and publishes the other files;
* ``nothing``    -- valid input without speech: no utterance, no event, no dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["events", "deadletter", "refused", "nothing"]


@dataclass(frozen=True)
class Case:
    id: str
    layer: Literal["file", "message"]
    what: str
    outcome: Outcome
    reason: str = ""
    """A part of the dead letter's reason, or of the publisher's error."""
    service: str = "asr_alignment"
    same_as: str | None = None
    """The clean case whose utterance count this one must equal exactly: a conversion that loses or
    splits an utterance fails. None for the baselines themselves and for ``truncated-wav`` (fewer)."""
    defect: str = ""
    """A known defect that makes this case fail its count today: the test expects that failure
    (strict xfail), so the fix shows as an unexpected pass and the note is removed with it."""


CASES: tuple[Case, ...] = (
    # ---- files given to `emotion publish` ----
    Case("empty-file", "file", "a 0-byte .wav", "refused", "cannot decode audio"),
    Case("non-audio-bytes", "file", "random bytes named .wav", "refused", "cannot decode audio"),
    Case("text-as-wav", "file", "a text file named .wav", "refused", "cannot decode audio"),
    Case("header-only", "file", "a WAV header and no samples", "refused", "holds no samples"),
    Case(
        "corrupt-header", "file", "a WAV whose fmt chunk is overwritten with garbage", "refused", "cannot decode audio"
    ),
    Case("truncated-wav", "file", "a WAV cut off at 60 % of its bytes (header says more)", "events"),
    Case("nan-samples", "file", "a float WAV holding NaN samples", "refused", "NaN or infinite"),
    Case("inf-samples", "file", "a float WAV holding infinite samples", "refused", "NaN or infinite"),
    Case("pcm-u8", "file", "8-bit unsigned PCM WAV", "events", same_as="telephony-8k-stereo"),
    Case("pcm-24", "file", "24-bit PCM WAV", "events", same_as="telephony-8k-stereo"),
    Case("float-wav", "file", "32-bit float WAV", "events", same_as="telephony-8k-stereo"),
    Case("mu-law", "file", "G.711 mu-law WAV (telephony)", "events", same_as="telephony-8k-stereo"),
    Case("a-law", "file", "G.711 A-law WAV (telephony)", "events", same_as="telephony-8k-stereo"),
    Case("telephony-8k-stereo", "file", "8 kHz stereo, agent and customer on their own channels", "events"),
    Case("mono-16k", "file", "16 kHz mono", "events"),
    Case(
        "resample-44k",
        "file",
        "44.1 kHz stereo (resampled to 16 kHz by the publisher)",
        "events",
        same_as="telephony-8k-stereo",
    ),
    Case("four-channels", "file", "4 channels (mixed down to mono)", "events", same_as="mono-16k"),
    Case("clipped", "file", "speech amplified 8x and clipped at full scale", "events", same_as="telephony-8k-stereo"),
    Case("silence-only", "file", "10 s of digital silence", "nothing"),
    # ---- messages on calls.audio (any producer) ----
    Case("empty-payload", "message", "a record with no bytes", "deadletter", "empty payload"),
    Case("malformed-json", "message", "JSON cut in the middle", "deadletter", "malformed JSON"),
    Case("not-an-object", "message", "a JSON array", "deadletter", "must be a JSON object"),
    Case("unknown-contract", "message", "contract 'audio_frame'", "deadletter", "unknown contract 'audio_frame'"),
    Case("unknown-version", "message", "audio_chunk v99", "deadletter", "unknown contract 'audio_chunk' version 99"),
    Case(
        "wrong-contract",
        "message",
        "an utterance message on calls.audio",
        "deadletter",
        "expected a audio_chunk message",
    ),
    Case(
        "missing-fields", "message", "an audio chunk without call_id and seq", "deadletter", "call_id: Field required"
    ),
    Case(
        "missing-sample-rate",
        "message",
        "an audio chunk without sample_rate",
        "deadletter",
        "sample_rate: Field required",
    ),
    Case(
        "wrong-sample-rate",
        "message",
        "sample_rate 1000 Hz",
        "deadletter",
        "sample_rate: Input should be greater than or equal to 4000",
    ),
    Case(
        "unknown-field",
        "message",
        "an audio chunk with a field the contract lacks",
        "deadletter",
        "Extra inputs are not permitted",
    ),
    Case("three-channels", "message", "channels 3", "deadletter", "channels: Input should be less than or equal to 2"),
    Case("roles-mismatch", "message", "2 channels, 1 channel role", "deadletter", "channel roles"),
    Case("bad-base64", "message", "pcm data that is not base64", "deadletter", "not valid base64"),
    Case("size-mismatch", "message", "pcm bytes that do not fill its shape", "deadletter", "need"),
    Case("int64-samples", "message", "int64 samples", "deadletter", "got int64"),
    Case("nan-chunk", "message", "float32 chunk holding NaN", "deadletter", "NaN or infinite"),
    Case("inf-chunk", "message", "float32 chunk holding +Inf", "deadletter", "NaN or infinite"),
    Case(
        "oversized-message",
        "message",
        "a 1.5 MB record (the services' limit is set to 1 MiB here)",
        "deadletter",
        "exceeds the limit",
    ),
    Case("chunk-too-long", "message", "one chunk of 12 s (limit set to 10 s here)", "deadletter", "the limit is 10 s"),
    Case(
        "float32-call",
        "message",
        "a whole call as float32 chunks, 3x too loud (clipped)",
        "events",
        same_as="telephony-8k-stereo",
    ),
    Case(
        "int32-call",
        "message",
        "a whole call as int32 (24-bit left-aligned) chunks",
        "events",
        same_as="telephony-8k-stereo",
    ),
    Case("int8-call", "message", "a whole call as signed 8-bit chunks", "events", same_as="telephony-8k-stereo"),
    Case(
        "format-change",
        "message",
        "a chunk that switches the call from 8 to 16 kHz",
        "deadletter",
        "format changed mid-call",
    ),
    Case("after-end", "message", "a chunk after the call's end_of_call", "deadletter", "after the end of call"),
    Case("duplicate-chunks", "message", "every chunk of a call sent twice", "events", same_as="telephony-8k-stereo"),
    Case("out-of-order", "message", "chunk 6 sent after chunk 7", "deadletter", "arrived after chunk 7"),
    Case(
        "never-ends",
        "message",
        "a call without end_of_call (flushed after the silence timeout)",
        "events",
        same_as="telephony-8k-stereo",
    ),
    Case(
        "over-call-limit",
        "message",
        "a call longer than segmentation.max_call_s (4 h by default; 30 s here)",
        "deadletter",
        "exceeds the limit of 30 s",
    ),
    Case(
        "bad-utterance",
        "message",
        "malformed JSON on utterances",
        "deadletter",
        "malformed JSON",
        service="text_encoder",
    ),
    Case(
        "bad-text-features",
        "message",
        "text features with an unsupported dtype on features.text",
        "deadletter",
        "unsupported dtype",
        service="graph_gat",
    ),
    Case(
        "expired-audio",
        "message",
        "an utterance whose audio is gone from Redis (expired) and not inline",
        "deadletter",
        "missing or expired",
        service="speech_encoder",
    ),
    Case(
        "bad-graph-features",
        "message",
        "a graph embedding with an unsupported dtype on features.graph",
        "deadletter",
        "unsupported dtype",
        service="moe_fusion",
    ),
)
