"""ASR alignment service: ``calls.audio`` -> ``utterances``.

Audio chunks of a call (8 or 16 kHz, mono or stereo with one speaker per channel) are cut into
utterances by voice activity (:mod:`services.segmentation`), transcribed with word timestamps by
the ``asr`` Triton model (Whisper), cleaned of text Whisper invents on silence and noise, and
published in the order they end, numbered per call (``<call_id>:<index:05d>``).

State.  Each call's segmentation state lives in Redis (``ctx.state``), so the service keeps no
audio in memory between batches and a restarted or rebalanced instance carries on mid-call:

* ``emotion:state:asr:call:<call_id>`` -- hash: the next expected ``seq``, the next utterance
  index, the audio format fixed by the first chunk, the language, whether the call has ended,
  and the wall time of its last chunk;
* ``emotion:state:asr:channel:<call_id>:<n>`` -- hash: channel ``n``'s
  :meth:`services.segmentation.ChannelSegmenter.state` (the not-yet-segmented 16 kHz int16 tail,
  the resampler and VAD state);
* ``emotion:state:asr:active`` -- sorted set of calls by the wall time of their last chunk; from
  :meth:`AsrAlignmentService.tick`, the instance that holds a call's partition flushes it once it
  has been silent for ``silence_timeout_s``.

Delivery.  :meth:`process` and :meth:`tick` only read the state; the new state of the calls a
batch touched is written in one Redis transaction by :meth:`delivered`, once the broker has
acknowledged that batch's utterances.  Batches are pipelined (:class:`shared.runtime.Deferred`):
while one batch's segments are at Whisper, the next batches are segmented from the state the
earlier ones left in memory (``_live``), and each batch's state is written when its own
utterances are delivered, in order.  A batch that fails anywhere (Triton, Kafka, Redis) drops
every batch in flight (:meth:`abandon`), which are replayed against the state in Redis and yield
the same utterances with the same ids, which consumers de-duplicate; a chunk whose ``seq`` was
already taken into the state (a replay after the commit was lost, or a duplicate send) is skipped.
A ``seq`` gap is logged and counted, not fatal; a chunk of the gap that arrives after all is
dead-lettered (its audio cannot be put back in place).  A chunk that cannot be decoded, changes
the call's sample rate, channels or roles, holds more than ``max_chunk_s`` of audio or takes the
call past ``max_call_s`` is rejected (dead-lettered) with the reason.

Hallucination guards, on top of the transcriber's own no-speech, log-probability and compression
checks: words whose middle lies outside the voiced spans of the segment (VAD), words Whisper gives
a very low probability, and transcripts that are known Whisper inventions on non-speech ("thank
you for watching", "시청해주셔서 감사합니다", ...) or a loop of one n-gram are dropped.  An utterance
left without text is still published (``text=""``, no words): the fusion sees the missing modality.

Each utterance's 16 kHz int16 audio goes to the feature cache under ``emotion:audio:<utterance_id>``
(``audio_key``); when the cache is down it travels inline in ``Utterance.audio`` instead.

Transcription.  The segments a batch completes go to Triton as one request each, all in flight at
once: the ``asr`` model has one instance per core and no dynamic batching, so parallel utterances
are decoded in parallel.  Transcripts are cached in Redis by (model version, serving configuration,
language asked for, segment audio), so audio streamed again (a re-run, a replayed backlog) costs
a look-up instead of Whisper.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.triton_service import TritonService
from services.segmentation import ChannelSegmenter, Segment
from shared.alignment import words_from_json
from shared.cache import content_key
from shared.contracts import ArrayPayload, AudioChunk, ContractError, Utterance, Word
from shared.runtime import Context, Deferred, ProcessResult, Reject
from shared.settings import SegmentationSettings, Settings
from shared.state import StateStore
from shared.triton_client import InFlight
from shared.triton_models import AsrTensors, asr_request

log = logging.getLogger(__name__)

HALLUCINATION_MARKERS: tuple[str, ...] = (
    "thank you for watching",
    "thanks for watching",
    "thank you so much for watching",
    "please subscribe",
    "subtitles by",
    "subtitled by",
    "captions by",
    "amara org",
    "transcribed by",
    "시청해주셔서 감사합니다",
    "시청해 주셔서 감사합니다",
    "시청 감사합니다",
    "구독과 좋아요",
    "구독 좋아요",
    "구독 부탁",
    "자막 제공",
    "mbc 뉴스",
)
"""Normalised phrases Whisper writes over silence, music or noise, never said in a call."""
HALLUCINATION_TRANSCRIPTS: frozenset[str] = frozenset({"you", "구독", "좋아요", "구독해주세요", "자막"})
"""Normalised transcripts that are hallucinations when they are the whole transcript."""
MISSING_KEPT = 256
"""How many skipped ``seq`` numbers a call remembers."""
PCM_SCALE: dict[str, float] = {"int8": 128.0, "int16": 32768.0, "int32": 2147483648.0}
"""Full scale of the signed integer sample types an audio chunk may carry (24-bit audio travels
left-aligned in int32); ``uint8`` is 8-bit WAV's offset binary, floats are already in [-1, 1]."""
SPACELESS_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "bo", "yue"})
"""Languages whose words are written without spaces between them."""


def normalise(text: str) -> str:
    """Lower case, punctuation and symbols removed, whitespace collapsed (for phrase matching)."""
    kept = "".join(ch if unicodedata.category(ch)[0] in "LNZ" else " " for ch in unicodedata.normalize("NFKC", text))
    return re.sub(r"\s+", " ", kept).strip().lower()


def is_ngram_loop(tokens: list[str], max_repeats: int) -> bool:
    """Whether ``tokens`` are one n-gram repeated more than ``max_repeats`` times (a partial
    repeat may trail), which is how Whisper's decoding loops look."""
    for n in range(1, len(tokens) // (max_repeats + 1) + 1):
        gram = tokens[:n]
        if all(tokens[i] == gram[i % n] for i in range(len(tokens))):
            return True
    return False


def hallucination(text: str, max_repeats: int) -> str | None:
    """Why ``text`` is a known hallucination on non-speech, or None."""
    norm = normalise(text)
    if norm in HALLUCINATION_TRANSCRIPTS:
        return f"hallucinated transcript {norm!r}"
    for marker in HALLUCINATION_MARKERS:
        if marker in norm:
            return f"hallucinated phrase {marker!r}"
    if is_ngram_loop(norm.split(), max_repeats):
        return "repeated n-gram loop"
    return None


def guard_words(
    words: list[dict[str, Any]], voiced: list[tuple[float, float]], settings: SegmentationSettings
) -> list[dict[str, Any]]:
    """The words that are likely enough and lie on voiced audio (times relative to the segment)."""
    tol = settings.word_voiced_tolerance_s

    def on_voice(w: dict[str, Any]) -> bool:
        middle = (float(w["start"]) + float(w["end"])) / 2
        return any(a - tol <= middle <= b + tol for a, b in voiced)

    return [w for w in words if float(w.get("probability", 1.0)) >= settings.min_word_probability and on_voice(w)]


@dataclass
class CallState:
    """One call's state: the hash under ``call`` plus its channels' segmenters (loaded with it)."""

    call_id: str
    known: bool = False
    """False until the call's first chunk is taken in."""
    next_seq: int = 0
    next_index: int = 0
    sample_rate: int = 0
    channels: int = 0
    roles: list[str] = field(default_factory=list)
    language: str | None = None
    ended: bool = False
    last_chunk: float = 0.0
    audio_s: float = 0.0
    """Seconds of audio taken in (checked against ``segmentation.max_call_s``)."""
    missing: list[int] = field(default_factory=list)
    """``seq`` numbers skipped by a gap (the newest :data:`MISSING_KEPT`): one arriving late is
    told from a duplicate and dead-lettered, not silently dropped."""
    active: bool = True
    """False once flushed (ended or silent): the call leaves the active set."""
    segmenters: dict[int, ChannelSegmenter] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        return {
            "next_seq": str(self.next_seq),
            "next_index": str(self.next_index),
            "sample_rate": str(self.sample_rate),
            "channels": str(self.channels),
            "roles": json.dumps(self.roles),
            "language": self.language or "",
            "ended": str(int(self.ended)),
            "last_chunk": repr(self.last_chunk),
            "audio_s": repr(self.audio_s),
            "missing": json.dumps(self.missing),
        }

    @classmethod
    def from_fields(cls, call_id: str, raw: dict[bytes, bytes]) -> CallState:
        if not raw:
            return cls(call_id)
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            call_id,
            known=True,
            next_seq=int(f["next_seq"]),
            next_index=int(f["next_index"]),
            sample_rate=int(f["sample_rate"]),
            channels=int(f["channels"]),
            roles=json.loads(f["roles"]),
            language=f["language"] or None,
            ended=f["ended"] == "1",
            last_chunk=float(f["last_chunk"]),
            audio_s=float(f.get("audio_s", 0.0)),
            missing=json.loads(f.get("missing", "[]")),
        )


@dataclass
class _Pending:
    """A segment with its place in the call, waiting for its transcript."""

    call: CallState
    index: int
    speaker: str
    segment: Segment

    @property
    def utterance_id(self) -> str:
        return f"{self.call.call_id}:{self.index:05d}"


@dataclass
class _CallSnapshot:
    """One call's state as a batch left it: what :meth:`AsrAlignmentService.delivered` writes."""

    call: CallState
    """The live state (its language may still be fixed by the batch's transcripts)."""
    known: bool
    ended: bool
    active: bool
    fields: dict[str, str]
    channels: dict[int, dict[str, bytes]]


@dataclass
class _Snapshot:
    """A batch's (or tick's) new state of the calls it touched, and the utterances it waits for."""

    calls: dict[str, _CallSnapshot]
    expected: set[str]


class _Transcription:
    """Transcripts of segments: cached ones at once, the others in flight at Triton."""

    def __init__(self, service: AsrAlignmentService, pending: list[_Pending]):
        self.service, self.pending = service, pending
        self.keys = [service._transcript_key(p) for p in pending]
        cached = service.ctx.cache.get_many(self.keys) if pending else []
        self.transcripts: list[dict[str, Any] | None] = [json.loads(v) if v is not None else None for v in cached]
        self.misses = [i for i, t in enumerate(self.transcripts) if t is None]
        metrics = service.ctx.metrics.cache
        metrics.labels(service.name, "hit").inc(len(pending) - len(self.misses))
        metrics.labels(service.name, "miss").inc(len(self.misses))
        # one request per segment, all in flight: Triton's instances share them out, and an instance
        # that was busy packs those that queued meanwhile into shared Whisper windows
        requests = [
            asr_request([pending[i].segment.audio.astype(np.float32) / 32768], [pending[i].call.language or ""])
            for i in self.misses
        ]
        outputs = [
            AsrTensors.TEXT.name,
            AsrTensors.DETECTED_LANGUAGE.name,
            AsrTensors.WORDS.name,
            AsrTensors.WINDOW.name,
        ]
        self.requests: InFlight | None = service.model.submit_many(requests, outputs) if requests else None

    def wait(self, timeout_s: float) -> bool:
        return self.requests is None or self.requests.wait(timeout_s)

    def result(self) -> list[Utterance]:
        """The utterances, in the order of the segments."""
        svc = self.service
        if self.requests is not None:
            fresh = []
            for i, out in zip(self.misses, self.requests.result(), strict=True):
                window = int(out[AsrTensors.WINDOW.name][0, 0])
                if window:  # decoded (0: silence, no Whisper run)
                    svc.ctx.metrics.asr_window.labels(svc.name).observe(window)
                self.transcripts[i] = {
                    "text": _text(out[AsrTensors.TEXT.name][0, 0]),
                    "language": _text(out[AsrTensors.DETECTED_LANGUAGE.name][0, 0]),
                    "words": words_from_json(out[AsrTensors.WORDS.name][0, 0]),
                }
                fresh.append((self.keys[i], json.dumps(self.transcripts[i]).encode()))
            svc.ctx.cache.put_many(fresh)
            self.requests = None
        utterances = []
        for p, t in zip(self.pending, self.transcripts, strict=True):
            assert t is not None
            text, language = t["text"], t["language"] or p.call.language
            if not p.call.language and language and text.strip():
                # the call's first words fix its language: Whisper's per-utterance detection on a
                # few seconds of telephone audio wanders between languages
                p.call.language = language
            utterances.append(svc._utterance(p, text, language, t["words"]))
        return utterances


class _Transcribing(Deferred):
    """A batch's results once its transcription is done: per chunk, its utterances or its Reject."""

    def __init__(self, taken: list[list[_Pending] | Reject], transcription: _Transcription):
        self.taken, self.transcription = taken, transcription

    def wait(self, timeout_s: float) -> bool:
        return self.transcription.wait(timeout_s)

    def result(self) -> list[ProcessResult]:
        numbered = iter(self.transcription.result())
        return [t if isinstance(t, Reject) else [next(numbered) for _ in t] for t in self.taken]


def decode_pcm(chunk: AudioChunk) -> np.ndarray:
    """The chunk's samples as float32 ``[frames, channels]`` in [-1, 1]; :class:`Reject` when bad.

    Signed 8, 16 and 32-bit integers, unsigned 8-bit and 16/32-bit floats are converted; float
    samples beyond full scale are clipped (as a DAC would), NaN and infinities are rejected."""
    try:
        pcm = chunk.pcm.to_array()
    except ContractError as exc:
        raise Reject(f"pcm undecodable: {exc.reason}") from exc
    kind = str(pcm.dtype)
    if kind in PCM_SCALE:
        samples = pcm.astype(np.float32) / PCM_SCALE[kind]
    elif kind == "uint8":
        samples = (pcm.astype(np.float32) - 128.0) / 128.0
    elif kind in ("float16", "float32"):
        samples = pcm.astype(np.float32)
        if not np.all(np.isfinite(samples)):
            raise Reject("pcm holds NaN or infinite samples")
        np.clip(samples, -1.0, 1.0, out=samples)
    else:
        raise Reject(f"pcm must be 8, 16 or 32-bit integer or float samples, got {kind}")
    if pcm.ndim != 1 or pcm.size % chunk.channels:
        raise Reject(f"pcm of shape {list(pcm.shape)} is not interleaved samples of {chunk.channels} channels")
    return samples.reshape(-1, chunk.channels)


class AsrAlignmentService(TritonService):
    name = "asr_alignment"
    triton_model = "asr"
    input_contract = AudioChunk
    retry_alone = False  # a chunk's state depends on the chunks before it in the batch

    def __init__(self, settings: Settings):
        self.input_topic = settings.topics.audio
        self.output_topic = settings.topics.utterances
        self._live: dict[str, CallState] = {}
        """Calls touched by batches not delivered yet: their newest state (later batches go on from it)."""
        self._undelivered: deque[_Snapshot] = deque()
        """The state each processed batch left, oldest first, waiting for its utterances' delivery."""

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.settings = ctx.settings
        self.seg_settings = ctx.settings.segmentation
        self._asr_config = json.dumps(
            {**self.model_parameters, "languages": list(ctx.settings.models.languages)}, sort_keys=True
        )
        ctx.metrics.audio_seconds.labels(self.name)  # the series exists before the first chunk

    # ---- keys and state --------------------------------------------------------------------
    def _call_key(self, call_id: str) -> str:
        return self.ctx.state.key("asr", "call", call_id)

    def _channel_key(self, call_id: str, channel: int) -> str:
        return self.ctx.state.key("asr", "channel", call_id, str(channel))

    _active_key = StateStore.key("asr", "active")
    """Calls whose audio is held in their segmenters, scored by the wall time of their last chunk."""

    @classmethod
    def open_calls(cls, state: StateStore) -> list[str]:
        """Calls whose audio is still held, not yet cut into utterances: they have neither ended
        nor been flushed by the silence timeout (the ``asr_alignment`` instances' shared state)."""
        with state.guard() as r:
            return [m.decode() for m in r.zrange(cls._active_key, 0, -1)]

    def _load(self, call_id: str) -> CallState:
        """The call's newest state: in memory while a batch that touched it is in flight, else Redis."""
        if call_id in self._live:
            return self._live[call_id]
        with self.ctx.state.guard() as r:
            pipe = r.pipeline(transaction=False)
            pipe.hgetall(self._call_key(call_id))
            for ch in range(2):
                pipe.hgetall(self._channel_key(call_id, ch))
            raw_call, *raw_channels = pipe.execute()
        call = CallState.from_fields(call_id, raw_call)
        for ch, raw in enumerate(raw_channels[: call.channels]):
            state = {k.decode(): v for k, v in raw.items()}
            call.segmenters[ch] = (
                ChannelSegmenter.from_state(self.seg_settings, state)
                if state
                else ChannelSegmenter(self.seg_settings, call.sample_rate)
            )
        return call

    @staticmethod
    def _snapshot(calls: dict[str, CallState], pending: list[_Pending]) -> _Snapshot:
        """The calls' state now (serialised, so later batches can move on) and the utterances to wait for."""
        return _Snapshot(
            {
                c.call_id: _CallSnapshot(
                    c,
                    c.known,
                    c.ended,
                    c.active,
                    c.fields(),
                    {} if c.ended else {ch: seg.state() for ch, seg in c.segmenters.items()},
                )
                for c in calls.values()
            },
            {p.utterance_id for p in pending},
        )

    def _save(self, snapshot: _Snapshot) -> None:
        """Write a batch's state of its calls in one transaction."""
        if not snapshot.calls:
            return
        ttl = self.ctx.state.ttl_s
        with self.ctx.state.guard() as r:
            pipe = r.pipeline(transaction=True)
            for call_id, snap in snapshot.calls.items():
                if not snap.known:
                    pipe.zrem(self._active_key, call_id)
                    continue
                fields = {**snap.fields, "language": snap.fields["language"] or snap.call.language or ""}
                pipe.hset(self._call_key(call_id), mapping=fields)
                pipe.expire(self._call_key(call_id), ttl)
                if snap.ended:
                    pipe.delete(*(self._channel_key(call_id, ch) for ch in range(snap.call.channels or 1)))
                for ch, state in snap.channels.items():
                    pipe.hset(self._channel_key(call_id, ch), mapping=state)
                    pipe.expire(self._channel_key(call_id, ch), ttl)
                if snap.active and not snap.ended:
                    pipe.zadd(self._active_key, {call_id: float(snap.fields["last_chunk"])})
                else:
                    pipe.zrem(self._active_key, call_id)
            pipe.expire(self._active_key, ttl)
            pipe.execute()

    def delivered(self, outputs: list) -> None:
        """The oldest undelivered batch's utterances are acknowledged: write the state it left."""
        if not self._undelivered:
            return
        snapshot = self._undelivered.popleft()
        if {o.utterance_id for o in outputs} != snapshot.expected:
            log.error(
                "delivered utterances %s are not the batch's %s; its state is not written (it will be replayed)",
                sorted(o.utterance_id for o in outputs),
                sorted(snapshot.expected),
            )
            self.abandon()
            return
        self._save(snapshot)
        still = {call_id for later in self._undelivered for call_id in later.calls}
        for call_id in snapshot.calls:
            if call_id not in still:
                self._live.pop(call_id, None)

    def abandon(self) -> None:
        """Batches in flight were dropped: their state is forgotten; the replay starts from Redis."""
        self._live.clear()
        self._undelivered.clear()

    # ---- chunks ----------------------------------------------------------------------------
    def process(self, batch: list[AudioChunk]) -> Deferred:
        """Take the chunks into their calls, then send the segments they complete to Whisper
        and return without waiting (the runtime completes the batch once they are transcribed)."""
        calls: dict[str, CallState] = {}
        now = time.time()
        taken: list[list[_Pending] | Reject] = []
        for chunk in batch:
            if chunk.call_id not in calls:
                calls[chunk.call_id] = self._load(chunk.call_id)
            call = calls[chunk.call_id]
            try:
                taken.append(self._take(call, chunk, now))
            except Reject as reject:
                self.ctx.metrics.audio_chunks.labels(self.name, "rejected").inc()
                taken.append(reject)
        pending = [p for t in taken if not isinstance(t, Reject) for p in t]
        self._undelivered.append(self._snapshot(calls, pending))
        self._live.update(calls)
        return _Transcribing(taken, _Transcription(self, pending))

    def _take(self, call: CallState, chunk: AudioChunk, now: float) -> list[_Pending]:
        """Take one chunk into its call's state; the segments it completes, numbered."""
        if call.known and chunk.seq < call.next_seq:
            if chunk.seq in call.missing:
                call.missing.remove(chunk.seq)
                raise Reject(
                    f"chunk {chunk.seq} of call {call.call_id} arrived after chunk {call.next_seq - 1}: "
                    "a late chunk's audio cannot be put back in place; it is left out of the call"
                )
            log.info("call %s: chunk %d already taken in (next is %d); skipped", call.call_id, chunk.seq, call.next_seq)
            self.ctx.metrics.audio_chunks.labels(self.name, "duplicate").inc()
            return []
        if call.ended:
            raise Reject(f"chunk {chunk.seq} arrived after the end of call {call.call_id}")
        if len(chunk.channel_roles) != chunk.channels:
            raise Reject(f"{chunk.channels} channels but channel roles {chunk.channel_roles}")
        fmt = (chunk.sample_rate, chunk.channels, list(chunk.channel_roles))
        if call.known and fmt != (call.sample_rate, call.channels, call.roles):
            raise Reject(
                f"audio format changed mid-call: {call.sample_rate} Hz x {call.channels} {call.roles} "
                f"-> {chunk.sample_rate} Hz x {chunk.channels} {chunk.channel_roles}"
            )
        samples = decode_pcm(chunk)
        seconds = samples.shape[0] / chunk.sample_rate
        limits = self.seg_settings
        if seconds > limits.max_chunk_s:
            raise Reject(
                f"chunk {chunk.seq} holds {seconds:.1f} s of audio; the limit is {limits.max_chunk_s:g} s "
                "(stream a call in chunks of a few hundred milliseconds)"
            )
        if call.audio_s + seconds > limits.max_call_s:
            raise Reject(
                f"call {call.call_id} exceeds the limit of {limits.max_call_s:g} s of audio "
                f"(segmentation.max_call_s) at chunk {chunk.seq}; its audio from here on is left out"
            )
        if chunk.seq > call.next_seq:
            log.warning("call %s: chunks %d..%d missing; carrying on", call.call_id, call.next_seq, chunk.seq - 1)
            self.ctx.metrics.audio_chunks.labels(self.name, "gap").inc()
            call.missing = (call.missing + list(range(max(call.next_seq, chunk.seq - MISSING_KEPT), chunk.seq)))[
                -MISSING_KEPT:
            ]
        if not call.known:
            call.known, (call.sample_rate, call.channels, call.roles) = True, fmt
            call.segmenters = {
                ch: ChannelSegmenter(self.seg_settings, chunk.sample_rate) for ch in range(chunk.channels)
            }
        completed: list[tuple[int, Segment]] = []
        for ch, seg in call.segmenters.items():
            completed += [(ch, s) for s in seg.feed(samples[:, ch])]
            if chunk.end_of_call:
                completed += [(ch, s) for s in seg.flush()]
        call.next_seq, call.last_chunk, call.active = chunk.seq + 1, now, True
        call.audio_s += seconds
        call.ended = chunk.end_of_call
        call.language = chunk.language or call.language
        self.ctx.metrics.audio_chunks.labels(self.name, "ok").inc()
        self.ctx.metrics.audio_seconds.labels(self.name).inc(samples.shape[0] / chunk.sample_rate)
        return self._number(call, completed)

    def _number(self, call: CallState, completed: list[tuple[int, Segment]]) -> list[_Pending]:
        """Give the completed segments their utterance index, in the order they start."""
        pending = []
        for ch, segment in sorted(completed, key=lambda c: (c[1].start, c[0])):
            pending.append(_Pending(call, call.next_index, call.roles[ch], segment))
            call.next_index += 1
        return pending

    # ---- timers ----------------------------------------------------------------------------
    def tick(self, now: float, caught_up_since: float) -> list[Utterance]:
        """Flush the calls of this instance's partitions that sent nothing for ``silence_timeout_s``,
        as if they had ended.  Only silence heard while caught up counts: until the service has
        been caught up for a whole timeout (after a start, a rebalance, a backlog, a Kafka or
        Triton outage) no call is silent, since its audio may have been held up on the way (a
        flush cuts the call's segmentation where the audio stopped, so a call flushed by mistake
        is cut into other utterances than its audio holds).  A call on another instance's
        partitions may be in that instance's backlog (it flushes it), and a call a batch in
        flight has touched has just sent audio."""
        idle_since = now - self.seg_settings.silence_timeout_s
        if caught_up_since > idle_since:
            return []
        with self.ctx.state.guard() as r:
            silent = [m.decode() for m in r.zrangebyscore(self._active_key, "-inf", idle_since)]
        silent = [c for c in silent if c not in self._live and self.ctx.owns(self.input_topic, c.encode("utf-8"))]
        calls = {call_id: self._load(call_id) for call_id in silent}
        pending = []
        for call in calls.values():
            completed = [(ch, s) for ch, seg in call.segmenters.items() for s in seg.flush()]
            call.active = False
            pending += self._number(call, completed)
            log.info(
                "call %s: no audio for %.0f s; flushed %d utterances",
                call.call_id,
                now - call.last_chunk,
                len(completed),
            )
        snapshot = self._snapshot(calls, pending)
        utterances = _Transcription(self, pending).result()
        if utterances:  # written when they are delivered; until then later batches go on from memory
            self._undelivered.append(snapshot)
            self._live.update(calls)
        else:
            self._save(snapshot)
        return utterances

    # ---- transcription ---------------------------------------------------------------------
    def _transcript_key(self, p: _Pending) -> str:
        """Cache key of a segment's transcript: the ASR model, its serving configuration, the
        language asked for and the segment's audio."""
        return content_key(
            "asr", self.model_version, self._asr_config, p.call.language or "", p.segment.audio.tobytes()
        )

    def _utterance(self, p: _Pending, text: str, language: str | None, words: list[dict[str, Any]]) -> Utterance:
        seg = p.segment
        kept = guard_words(words, seg.voiced_s(), self.seg_settings)
        if len(kept) < len(words):
            log.debug("%s:%05d: dropped words %s", p.call.call_id, p.index, [w["text"] for w in words if w not in kept])
            text = ("" if (language or "").split("-")[0] in SPACELESS_LANGUAGES else " ").join(w["text"] for w in kept)
        outcome = "text" if text.strip() else "empty"
        if outcome == "text" and (reason := hallucination(text, self.seg_settings.max_ngram_repeats)):
            log.info("%s:%05d: blanked %r (%s)", p.call.call_id, p.index, text, reason)
            text, kept, outcome = "", [], "hallucination"
        self.ctx.metrics.utterances.labels(self.name, p.speaker, outcome).inc()
        utterance_id = p.utterance_id
        pcm = seg.audio.astype("<i2")
        audio_key = f"emotion:audio:{utterance_id}"
        stored = self.ctx.cache.put(audio_key, pcm.tobytes(), ttl_s=self.settings.redis.audio_ttl_s)
        return Utterance(
            call_id=p.call.call_id,
            utterance_id=utterance_id,
            index=p.index,
            speaker=p.speaker,
            start=seg.start_s,
            end=seg.end_s,
            text=text.strip(),
            language=language,
            words=[
                Word(
                    text=w["text"],
                    start=max(0.0, float(w["start"])),
                    end=max(0.0, float(w["end"])),
                    probability=min(1.0, max(0.0, float(w.get("probability", 1.0)))),
                )
                for w in kept
            ],
            audio=None if stored else ArrayPayload.from_array(pcm, "int16"),
            audio_key=audio_key if stored else None,
        )


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
