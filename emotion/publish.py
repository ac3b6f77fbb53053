"""``emotion publish``: stream call audio into ``calls.audio`` as :class:`~shared.contracts.AudioChunk` messages.

A call is 16-bit PCM, mono or stereo (``agent``, ``customer``), cut into chunks of ``chunk_ms``
(default 200 ms): ``seq`` counts from 0 within the call, samples are interleaved
(``[frames * channels]`` int16), the last chunk has ``end_of_call``, and every chunk is keyed by the
call id so that a call stays on one partition, in order.  8 kHz audio stays 8 kHz (the ASR service
resamples); rates above 16 kHz are resampled to 16 kHz; other rates are kept.

**Scheduling.**  One thread publishes every call.  Each call's chunk ``k`` is due when its audio
would have been spoken (the chunk's end on the call's timeline); up to ``concurrency`` calls run at
once and the next call starts when one ends.  Chunks go out in due order across calls, so concurrent
calls interleave as they would on a live system.  ``pace="realtime"`` sleeps until each chunk is
due; ``pace="fast"`` (the default) sends in the same order without sleeping.

**Delivery.**  The producer is the platform's idempotent ``acks=all`` producer; at the end it is
flushed and every send's future is checked, so a chunk the broker did not acknowledge makes its
call fail, never vanishes.  A file that cannot be read is reported by name and the other calls go
on; :attr:`PublishReport.ok` (the command's exit status) is false when anything failed.

Library API (the demo and the tests): :class:`CallAudio`, :func:`load_call`, :func:`load_raw`,
:func:`calls_from_manifest`, :func:`chunk_call`, :func:`publish_calls` -> :class:`PublishReport`.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
from tqdm.auto import tqdm

from shared.contracts import ArrayPayload, AudioChunk, Speaker
from shared.settings import Settings

__all__ = [
    "CallAudio",
    "CallSource",
    "PublishReport",
    "calls_from_manifest",
    "chunk_call",
    "file_source",
    "load_call",
    "load_raw",
    "publish_calls",
]

log = logging.getLogger("emotion.publish")

Pace = Literal["fast", "realtime"]
ROLES: frozenset[str] = frozenset(get_args(Speaker))
STEREO_ROLES: tuple[str, str] = ("agent", "customer")
KEEP_RATE_MAX = 16_000
"""Rates up to this are published as they are; higher ones are resampled to it."""
AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
)
"""What a folder source picks up (a file named explicitly is tried whatever its suffix)."""
ACK_TIMEOUT_S = 60.0


class AudioSourceError(Exception):
    """A call's audio cannot be read or does not fit the contract; the message names the source."""


# ---- calls --------------------------------------------------------------------------------------


@dataclass
class CallAudio:
    """One call's audio, ready to publish: int16 ``pcm`` of shape ``[frames, channels]``."""

    call_id: str
    pcm: np.ndarray
    sample_rate: int
    channel_roles: list[str]
    language: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.call_id) <= 128:
            raise AudioSourceError(f"call id {self.call_id!r} must have 1 to 128 characters")
        if self.pcm.dtype != np.int16 or self.pcm.ndim != 2 or not 1 <= self.pcm.shape[1] <= 2:
            raise AudioSourceError(
                f"{self.call_id}: pcm must be int16 [frames, 1 or 2 channels], got {self.pcm.dtype} {self.pcm.shape}"
            )
        if self.pcm.shape[0] == 0:
            raise AudioSourceError(f"{self.call_id}: no audio")
        if len(self.channel_roles) != self.pcm.shape[1] or not set(self.channel_roles) <= ROLES:
            raise AudioSourceError(
                f"{self.call_id}: channel roles {self.channel_roles} do not fit {self.pcm.shape[1]} channel(s); "
                f"one role per channel from {sorted(ROLES)}"
            )
        if not 4000 <= self.sample_rate <= KEEP_RATE_MAX:
            raise AudioSourceError(f"{self.call_id}: sample rate {self.sample_rate} Hz is outside 4000-16000 Hz")

    @property
    def channels(self) -> int:
        return int(self.pcm.shape[1])

    @property
    def duration(self) -> float:
        return self.pcm.shape[0] / self.sample_rate


@dataclass(frozen=True)
class CallSource:
    """A call read only when its turn comes, so a folder of thousands of files is not held in memory."""

    name: str
    """What error messages call it (the file path)."""
    duration: float
    """Seconds of audio, for the progress bar (0 when unknown)."""
    load: Callable[[], CallAudio]


def parse_channel_roles(value: str | Sequence[str]) -> list[str]:
    """``"agent,customer"`` or ``["agent", "customer"]`` -> a validated list of roles."""
    roles = [r.strip() for r in (value.split(",") if isinstance(value, str) else value) if r.strip()]
    if not 1 <= len(roles) <= 2 or not set(roles) <= ROLES:
        raise ValueError(f"channel roles {value!r}: give one or two of {', '.join(sorted(ROLES))}, e.g. agent,customer")
    return roles


def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def _fit_rate(pcm: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Keep rates up to 16 kHz; resample higher ones to 16 kHz, channel by channel (NumPy's polyphase
    filter: the same as SciPy's, without SciPy's multi-second import)."""
    if sample_rate <= KEEP_RATE_MAX:
        return pcm, sample_rate
    from shared.audio import resample

    x = pcm.astype(np.float32) / 32768.0
    out = np.stack([resample(x[:, c], sample_rate, KEEP_RATE_MAX, backend="numpy") for c in range(x.shape[1])], axis=1)
    return _to_pcm16(out), KEEP_RATE_MAX


def _roles_for(name: str, channels: int, roles: Sequence[str] | None) -> list[str]:
    if channels == 1:
        if roles is not None and len(roles) == 1:
            return list(roles)
        return ["mono"]
    if roles is None:
        return list(STEREO_ROLES)
    if len(roles) != channels:
        raise AudioSourceError(f"{name}: {channels} channels but channel roles {list(roles)}")
    return list(roles)


def load_call(
    path: str | Path,
    call_id: str | None = None,
    channel_roles: Sequence[str] | None = None,
    language: str | None = None,
) -> CallAudio:
    """Read an audio file (anything libsndfile reads: WAV, FLAC, OGG ...) as a call.

    ``call_id`` defaults to the file name without its suffix.  ``channel_roles`` name a stereo
    file's channels (default ``agent,customer``); a mono file is ``mono`` unless one role is given;
    more than two channels are mixed down to mono.  Raises :class:`AudioSourceError` naming the file.
    """
    from shared.audio import AudioError, read_audio

    p = Path(path)
    try:
        data, sr = read_audio(p)
    except AudioError as e:
        raise AudioSourceError(str(e)) from e
    if data.shape[1] > 2:
        log.warning("%s: %d channels mixed down to mono", p, data.shape[1])
        data = data.mean(axis=1, keepdims=True)
    pcm, sr = _fit_rate(_to_pcm16(data), sr)
    roles = _roles_for(str(p), pcm.shape[1], channel_roles)
    return CallAudio(call_id or p.stem, np.ascontiguousarray(pcm), sr, roles, language)


def load_raw(
    data: bytes,
    sample_rate: int,
    channels: int,
    call_id: str,
    channel_roles: Sequence[str] | None = None,
    language: str | None = None,
    name: str = "raw input",
) -> CallAudio:
    """Raw signed 16-bit little-endian interleaved PCM as a call (see :func:`load_call` for the roles)."""
    if channels not in (1, 2):
        raise AudioSourceError(f"{name}: raw input must have 1 or 2 channels, not {channels}")
    if len(data) % (2 * channels):
        raise AudioSourceError(f"{name}: {len(data)} bytes is not a whole number of {channels}-channel s16le frames")
    if not data:
        raise AudioSourceError(f"{name}: no audio")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16).reshape(-1, channels)
    pcm, sr = _fit_rate(pcm, sample_rate)
    return CallAudio(call_id, np.ascontiguousarray(pcm), sr, _roles_for(name, channels, channel_roles), language)


def chunk_frames(sample_rate: int, chunk_ms: float) -> int:
    return max(1, round(sample_rate * chunk_ms / 1000))


def chunk_call(call: CallAudio, chunk_ms: float = 200) -> Iterator[AudioChunk]:
    """The call's :class:`AudioChunk` messages in order (``seq`` 0.., ``end_of_call`` on the last)."""
    step = chunk_frames(call.sample_rate, chunk_ms)
    n = math.ceil(call.pcm.shape[0] / step)
    for seq in range(n):
        yield AudioChunk(
            call_id=call.call_id,
            seq=seq,
            sample_rate=call.sample_rate,
            channels=call.channels,
            channel_roles=call.channel_roles,
            pcm=ArrayPayload.from_array(call.pcm[seq * step : (seq + 1) * step].reshape(-1)),
            end_of_call=seq == n - 1,
            language=call.language,
        )


# ---- publishing ---------------------------------------------------------------------------------


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)


@dataclass
class CallFailure:
    name: str
    reason: str


@dataclass
class PublishReport:
    """What a publishing run did."""

    calls: int = 0
    """Calls whose every chunk the broker acknowledged."""
    chunks: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    """From the first chunk's schedule (the first ``concurrency`` calls already read) to the last acknowledgement."""
    call_ids: list[str] = field(default_factory=list)
    failures: list[CallFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio sent per second of wall time (about the concurrency when paced in real time)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")

    def summary(self) -> str:
        lines = [
            f"published {self.calls} call(s), {self.chunks} chunks, {self.audio_s:.1f} s of audio in "
            f"{self.wall_s:.1f} s ({self.realtime_factor:.1f}x realtime)"
        ]
        lines += [f"FAILED {f.name}: {f.reason}" for f in self.failures]
        return "\n".join(lines)


@dataclass
class _Stream:
    """A call being published: its chunks, the next one to send, and the sends in flight."""

    order: int
    name: str
    call: CallAudio
    start: float
    """When the call began, on the publishing timeline (seconds)."""
    chunks: Iterator[AudioChunk]
    step: int
    n_chunks: int
    seq: int = 0
    futures: list = field(default_factory=list)
    failed: str | None = None

    def due(self) -> float:
        """When chunk ``seq`` has been spoken: its end on the timeline."""
        end = min((self.seq + 1) * self.step, self.call.pcm.shape[0])
        return self.start + end / self.call.sample_rate


def _as_source(call: CallAudio | CallSource) -> CallSource:
    if isinstance(call, CallSource):
        return call
    return CallSource(call.call_id, call.duration, lambda: call)


def publish_calls(
    settings: Settings,
    calls: Iterable[CallAudio | CallSource],
    pace: Pace = "fast",
    chunk_ms: float = 200,
    progress: bool = True,
    *,
    concurrency: int = 16,
    producer=None,
    clock: Clock | None = None,
    on_sent: Callable[[AudioChunk], None] | None = None,
    until: Callable[[], bool] | None = None,
) -> PublishReport:
    """Publish ``calls`` to ``settings.topics.audio`` (see the module docstring for the schedule).

    ``producer`` defaults to :func:`shared.kafka_io.make_producer` (created and closed here);
    ``clock`` to the system clock (tests pass a fake one); ``on_sent`` is called with each chunk
    right after it is handed to the producer (the benchmark times utterances from it); ``until``,
    asked before each call starts: once it says True no call starts, the calls under way finish,
    and the calls left are neither read nor counted as failures (``emotion soak`` stops its lines
    so).  Never raises for a bad call: it is listed in :attr:`PublishReport.failures` and the
    others go on.
    """
    if pace not in get_args(Pace):
        raise ValueError(f"pace must be one of {get_args(Pace)}, got {pace!r}")
    if not 1 <= chunk_ms <= 60_000:
        raise ValueError(f"chunk_ms must be within 1-60000, got {chunk_ms}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    clock = clock or SystemClock()
    sources = [_as_source(c) for c in calls]
    own_producer = producer is None
    if own_producer:
        from shared.kafka_io import make_producer

        producer = make_producer(settings)
    topic = settings.topics.audio
    report = PublishReport()
    queue = iter(sources)
    heap: list[tuple[float, int, _Stream]] = []
    streams: list[_Stream] = []
    known = all(s.duration > 0 for s in sources)
    bar = tqdm(
        total=sum(s.duration for s in sources) if known else None,
        unit="s",
        desc="publish",
        disable=not progress,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}]" if known else None,
    )

    def start_next(at: float) -> None:
        """Start the next call that loads (at ``at`` on the timeline); record the ones that do not."""
        if until is not None and until():
            return
        for source in queue:
            try:
                call = source.load()
            except (AudioSourceError, OSError, ValueError) as e:
                log.error("%s", e)
                report.failures.append(CallFailure(source.name, str(e)))
                continue
            step = chunk_frames(call.sample_rate, chunk_ms)
            stream = _Stream(
                len(streams),
                source.name,
                call,
                at,
                chunk_call(call, chunk_ms),
                step,
                math.ceil(call.pcm.shape[0] / step),
            )
            streams.append(stream)
            heapq.heappush(heap, (stream.due(), stream.order, stream))
            return

    try:
        producer.partitions_for(topic)  # connect and fetch the metadata before the clock starts
        for _ in range(concurrency):  # and read the first calls
            start_next(0.0)
        t0 = clock.monotonic()
        while heap:
            due, _, stream = heapq.heappop(heap)
            if pace == "realtime":
                wait = t0 + due - clock.monotonic()
                if wait > 0:
                    clock.sleep(wait)
            chunk = next(stream.chunks)
            try:
                stream.futures.append(producer.send(topic, key=chunk.key, value=chunk.encode()))
            except Exception as e:  # a send refused at once (size, metadata timeout): the call is broken
                stream.failed = f"chunk {chunk.seq} not sent: {type(e).__name__}: {e}"
                log.error("%s: %s", stream.name, stream.failed)
                start_next(due)
                continue
            if on_sent is not None:
                on_sent(chunk)
            seconds = chunk.pcm.shape[0] / chunk.channels / chunk.sample_rate
            report.chunks += 1
            report.audio_s += seconds
            bar.update(min(seconds, bar.total - bar.n) if bar.total else seconds)
            stream.seq += 1
            if stream.seq < stream.n_chunks:
                heapq.heappush(heap, (stream.due(), stream.order, stream))
            else:
                start_next(due)
    finally:
        bar.close()
        try:
            producer.flush(timeout=ACK_TIMEOUT_S)
        finally:
            _check_acks(streams, report)
            if own_producer:
                producer.close(timeout=5)
    report.wall_s = clock.monotonic() - t0
    return report


def _check_acks(streams: list[_Stream], report: PublishReport) -> None:
    """Every send of every call must have been acknowledged; a call with any failure fails."""
    deadline = time.monotonic() + ACK_TIMEOUT_S
    for stream in streams:
        if stream.failed is None:
            for i, future in enumerate(stream.futures):
                try:
                    future.get(timeout=max(0.01, deadline - time.monotonic()))
                except Exception as e:  # the broker's (or the client's) reason, whatever its type
                    stream.failed = f"chunk {i} not acknowledged: {type(e).__name__}: {e}"
                    break
        if stream.failed is None and stream.seq == stream.n_chunks:
            report.calls += 1
            report.call_ids.append(stream.call.call_id)
        else:
            reason = stream.failed or f"interrupted after {stream.seq} of {stream.n_chunks} chunks"
            report.failures.append(CallFailure(stream.name, reason))


# ---- sources ------------------------------------------------------------------------------------


def _file_duration(path: Path) -> float:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # unreadable: load() reports it when its turn comes
        return 0.0
    return info.frames / info.samplerate if info.samplerate else 0.0


def file_source(path: Path, call_id: str | None, roles: Sequence[str] | None, language: str | None) -> CallSource:
    return CallSource(str(path), _file_duration(path), lambda: load_call(path, call_id, roles, language))


def _failing_source(name: str, reason: str) -> CallSource:
    def fail() -> CallAudio:
        raise AudioSourceError(reason)

    return CallSource(name, 0.0, fail)


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as they are; folders as their audio files (recursively, sorted)."""
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield p


def manifest_sources(path: Path, roles: Sequence[str] | None, language: str | None) -> list[CallSource]:
    """A JSON-lines manifest: ``audio`` (relative to the manifest's folder or absolute) and optional
    ``call_id``, ``language`` and ``channels`` (the channel roles, ``"agent,customer"`` or a list)."""
    sources = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        return [_failing_source(str(path), f"{path}: cannot read the manifest ({e})")]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
            if isinstance(obj, dict) and "audio" in obj and obj["audio"] is None:
                sources.append(_failing_source(where, f'{where}: a text-only line ("audio": null): no audio to stream'))
                continue
            audio = Path(obj["audio"])
            own_roles = parse_channel_roles(obj["channels"]) if obj.get("channels") else roles
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            sources.append(_failing_source(where, f"{where}: not a manifest line with an 'audio' field ({e})"))
            continue
        audio = audio if audio.is_absolute() else path.parent / audio
        sources.append(file_source(audio, obj.get("call_id"), own_roles, obj.get("language") or language))
    return sources


def calls_from_manifest(
    path: str | Path, channel_roles: Sequence[str] | None = None, language: str | None = None
) -> list[CallAudio]:
    """Every call of a manifest (see :func:`manifest_sources`), read now; raises
    :class:`AudioSourceError` naming the first line or file that cannot be read."""
    return [source.load() for source in manifest_sources(Path(path), channel_roles, language)]


def raw_source(
    path: str, sample_rate: int, channels: int, roles: Sequence[str] | None, language: str | None
) -> CallSource:
    """Raw s16le PCM from a file, or from standard input for ``-``."""
    call_id = "stdin" if path == "-" else Path(path).stem

    def load() -> CallAudio:
        try:
            data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        except OSError as e:
            raise AudioSourceError(f"{path}: cannot read raw audio ({e})") from e
        return load_raw(data, sample_rate, channels, call_id, roles, language, name=path)

    size = Path(path).stat().st_size if path != "-" and Path(path).is_file() else 0
    return CallSource(path, size / (2 * channels * sample_rate), load)


def _unique_ids(sources: list[CallSource], prefix: str) -> list[CallSource]:
    """Prefix every call id and make repeated ones unique (``x``, ``x-2``, ...)."""
    seen: dict[str, int] = {}

    def renamed(source: CallSource) -> CallSource:
        def load() -> CallAudio:
            call = source.load()
            call_id = prefix + call.call_id
            seen[call_id] = seen.get(call_id, 0) + 1
            if seen[call_id] > 1:
                call_id = f"{call_id}-{seen[call_id]}"
                log.warning("%s: call id already used; publishing it as %s", source.name, call_id)
            return replace(call, call_id=call_id)

        return CallSource(source.name, source.duration, load)

    return [renamed(s) for s in sources]


# ---- command ------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  emotion publish --synthetic 3                        # three generated calls, as fast as possible
  emotion publish --synthetic 20 --pace realtime --concurrency 5
  emotion publish calls/0001.wav calls/0002.flac       # stereo files: channel 0 agent, channel 1 customer
  emotion publish recordings/ --channel-roles customer,agent --language ko
  emotion publish --manifest calls.jsonl               # {"audio": "a.wav", "call_id": "c1", "language": "en"}
  sox in.mp3 -t raw -r 8000 -e signed -b 16 -c 1 - | emotion publish --raw 8000 -
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the examples' lines
    p.description = textwrap.fill(
        "Publish calls to the calls.audio topic as audio_chunk messages (default 200 ms each, keyed by call "
        "id, seq from 0, end_of_call on the last). Stereo is agent/customer unless --channel-roles says "
        "otherwise; 8 kHz stays 8 kHz, rates above 16 kHz become 16 kHz. --pace realtime sends each chunk "
        "when its audio would have been spoken, many calls at once; fast (default) sends in the same order "
        "without waiting. Every send is acknowledged by the broker before the command succeeds; an unreadable "
        "file is reported and the other calls go on (exit 1).",
        100,
    )
    p.epilog = EXAMPLES
    p.add_argument(
        "sources",
        nargs="*",
        metavar="PATH",
        help="audio files or folders of them (any format libsndfile reads); with --raw, raw PCM files or -",
    )
    p.add_argument(
        "--manifest",
        type=Path,
        action="append",
        default=[],
        help="JSON lines: audio (required), call_id, language, channels (roles); repeatable",
    )
    p.add_argument("--raw", type=int, metavar="RATE", help="the PATHs are raw s16le PCM at RATE Hz")
    p.add_argument("--raw-channels", type=int, default=1, choices=(1, 2), help="channels of --raw input (default 1)")
    p.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        default=0,
        help="also publish N generated agent/customer calls (espeak-ng; training/data/calls.py)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --synthetic calls (default 0)")
    p.add_argument("--languages", default="en,ko", help="languages of the --synthetic calls (default en,ko)")
    p.add_argument(
        "--turns", default="3,6", metavar="LO,HI", help="utterances per --synthetic call, inclusive range (default 3,6)"
    )
    p.add_argument("--mono", action="store_true", help="--synthetic calls mixed to mono (default: stereo)")
    p.add_argument(
        "--synthetic-dir",
        type=Path,
        help="keep the --synthetic calls (wav + ground-truth json) here (default: a temporary folder)",
    )
    p.add_argument(
        "--channel-roles",
        type=parse_channel_roles,
        metavar="ROLES",
        help="roles of a stereo source's channels (default agent,customer); mono sources are 'mono'",
    )
    p.add_argument("--language", help="language code sent with every call that has none of its own (e.g. en, ko)")
    p.add_argument("--id-prefix", default="", help="prepended to every call id (default: none)")
    p.add_argument(
        "--pace",
        choices=get_args(Pace),
        default="fast",
        help="realtime: each chunk when its audio would have been spoken; fast: no waiting (default)",
    )
    p.add_argument("--chunk-ms", type=float, default=200, help="audio per message in milliseconds (default 200)")
    p.add_argument("--concurrency", type=int, default=16, help="calls streamed at once (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def collect_sources(args: argparse.Namespace, synthetic_dir: Path) -> list[CallSource]:
    """Every call the command line names, in order: files and folders, manifests, synthetic calls."""
    roles = args.channel_roles
    sources: list[CallSource] = []
    if args.raw:
        sources += [raw_source(s, args.raw, args.raw_channels, roles, args.language) for s in args.sources]
    else:
        sources += [file_source(p, None, roles, args.language) for p in _expand(Path(s) for s in args.sources)]
    for manifest in args.manifest:
        sources += manifest_sources(manifest, roles, args.language)
    if args.synthetic:
        try:
            from training.data.calls import generate_calls
        except ModuleNotFoundError as e:
            from emotion.cli import missing_package

            raise SystemExit(missing_package("--synthetic", e)) from None

        lo, hi = (int(v) for v in args.turns.split(","))
        calls = generate_calls(
            synthetic_dir,
            args.synthetic,
            seed=args.seed,
            utterances_per_call=(lo, hi),
            languages=args.languages.split(","),
            stereo=not args.mono,
            progress=not args.no_progress,
        )
        sources += [file_source(c.path, c.call_id, c.channel_roles, c.language) for c in calls]
    return _unique_ids(sources, args.id_prefix)


def main(args: argparse.Namespace, settings: Settings) -> int:
    from kafka.errors import KafkaError

    if not (args.sources or args.manifest or args.synthetic):
        print("nothing to publish: give audio files or folders, --manifest, or --synthetic N", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="emotion-calls-") as tmp:
        synthetic_dir = args.synthetic_dir or Path(tmp)
        sources = collect_sources(args, synthetic_dir)
        try:
            report = publish_calls(
                settings,
                sources,
                pace=args.pace,
                chunk_ms=args.chunk_ms,
                progress=not args.no_progress,
                concurrency=args.concurrency,
            )
        except KafkaError as e:  # no broker: say where it was looked for
            print(f"cannot publish to Kafka at {settings.kafka.bootstrap}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    print(report.summary())
    if args.synthetic_dir:
        print(f"synthetic calls and their ground truth: {args.synthetic_dir}")
    return 0 if report.ok else 1
