"""Reliable service state in Redis: call buffers, per-utterance joins and speakers' baselines.

Unlike :class:`shared.cache.FeatureCache`, which silently degrades to "no cache", state must not
be lost: every Redis error inside :meth:`StateStore.guard` becomes :class:`shared.runtime.Retry`,
so the runtime rewinds the batch and commits nothing until Redis answers again.  Keys live under
``emotion:state:`` and carry ``settings.redis.state_ttl_s`` (the longest TTL in the store, so
``volatile-ttl`` eviction drops cache entries first).

:class:`UtteranceJoin` is the join the graph and fusion services share: each input of an utterance
(text features, speech features, ...) is stored as one field of a hash; the message that brings
the last missing part completes the join, atomically, in one Lua script, so two instances of a
service in one consumer group never both complete the same utterance.  A part replayed after a
crash (before the join's output was acknowledged) completes it again; once the output is
acknowledged, :meth:`UtteranceJoin.finish` marks the utterance done and drops its parts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as RedisRetry

from shared.settings import Settings
from shared.speaker_norm import FrameStatistics

log = logging.getLogger(__name__)

STATE_PREFIX = "emotion:state"


class StateUnavailable(ConnectionError):
    """Redis did not answer a state operation; the runtime treats it as a dependency failure."""


class StateStore:
    """Redis for state that must survive restarts of the service (not of Redis: see redis.conf)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        r = settings.redis
        self.ttl_s = r.state_ttl_s
        self.redis = client or redis.Redis(
            host=r.host,
            port=r.port,
            password=settings.redis_password,
            db=r.db,
            socket_timeout=max(2.0, r.socket_timeout_s),
            socket_connect_timeout=max(2.0, r.socket_timeout_s),
            retry=RedisRetry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        )

    @staticmethod
    def key(*parts: str) -> str:
        return ":".join((STATE_PREFIX, *parts))

    @contextmanager
    def guard(self) -> Iterator[redis.Redis]:
        """``with state.guard() as r:`` -- Redis errors become :class:`StateUnavailable` (retried)."""
        try:
            yield self.redis
        except redis.RedisError as exc:
            raise StateUnavailable(f"redis state unavailable: {exc}") from exc

    def close(self) -> None:
        self.redis.close()


# KEYS[1] = the join hash, KEYS[2] = its "done" marker; ARGV = field, value, required count, ttl.
# Returns 1 when the utterance is complete and not done yet: the field was new and completed the
# hash, or the field was already there (a replay) and the hash is complete; 0 otherwise; -1 done.
_PUT_PART = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 1 end
return 0
"""


@dataclass(frozen=True)
class JoinResult:
    utterance_id: str
    complete: bool
    already_done: bool = False


class UtteranceJoin:
    """Collects the named ``parts`` of each utterance; see the module docstring."""

    def __init__(self, state: StateStore, name: str, parts: Sequence[str]):
        self.state = state
        self.name = name
        self.parts = tuple(parts)
        self._put = state.redis.register_script(_PUT_PART)

    def _keys(self, utterance_id: str) -> tuple[str, str]:
        return self.state.key(self.name, "join", utterance_id), self.state.key(self.name, "done", utterance_id)

    def put(self, utterance_id: str, part: str, value: bytes) -> JoinResult:
        if part not in self.parts:
            raise ValueError(f"{self.name}: unknown join part {part!r}; expected one of {self.parts}")
        with self.state.guard():
            status = int(
                self._put(keys=self._keys(utterance_id), args=[part, value, len(self.parts), self.state.ttl_s])
            )
        return JoinResult(utterance_id, complete=status == 1, already_done=status == -1)

    def parts_of(self, utterance_ids: Sequence[str]) -> list[dict[str, bytes]]:
        """The stored parts of each utterance (field name -> value)."""
        with self.state.guard() as r:
            pipe = r.pipeline(transaction=False)
            for u in utterance_ids:
                pipe.hgetall(self._keys(u)[0])
            rows = pipe.execute()
        return [{k.decode(): v for k, v in row.items()} for row in rows]

    def finish(self, utterance_ids: Sequence[str]) -> None:
        """Mark utterances done (their outputs are acknowledged) and drop their parts."""
        if not utterance_ids:
            return
        with self.state.guard() as r:
            pipe = r.pipeline(transaction=True)
            for u in utterance_ids:
                join, done = self._keys(u)
                pipe.set(done, b"1", ex=self.state.ttl_s)
                pipe.delete(join)
            pipe.execute()

    def pending(self) -> int:
        """Utterances with some parts but not all (for the ``emotion_join_pending`` gauge)."""
        with self.state.guard() as r:
            return sum(1 for _ in r.scan_iter(match=self.state.key(self.name, "join", "*"), count=500))


class SpeakerBaselines:
    """Each call's speakers' frame statistics, utterance by utterance, for online per-speaker
    normalisation (see :class:`shared.contracts.SpeakerBaseline`).

    One hash per call and speaker; field = the utterance's index in the call, value = that
    utterance's :class:`~shared.speaker_norm.FrameStatistics`. An utterance's baseline is the sum of
    the speaker's last ``window`` fields before its own index, so it depends on the call's earlier
    utterances only: a replayed utterance (same index, same frames) gets the same baseline and
    writes the same field again, whatever was processed in between. Fields older than twice the
    window below the newest are dropped, bounding a call's memory at ``2 * window`` utterances per
    speaker; the hash expires ``ttl_s`` after its last write (``redis.speaker_ttl_s``).
    """

    def __init__(self, state: StateStore, name: str, window: int, ttl_s: int):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.state = state
        self.name = name
        self.window = int(window)
        self.ttl_s = int(ttl_s)

    def _key(self, call_id: str, speaker: str) -> str:
        return self.state.key(self.name, "speaker", call_id, speaker)

    def record(self, items: Sequence[tuple[str, str, int, FrameStatistics]], dim: int) -> list[FrameStatistics]:
        """Store each ``(call_id, speaker, index, statistics)`` and return, per item, the sum of the
        same speaker's statistics over its last ``window`` earlier utterances (items of one batch
        see each other: all are written before any is read)."""
        if not items:
            return []
        keys = sorted({self._key(call, speaker) for call, speaker, _, _ in items})
        with self.state.guard() as r:
            pipe = r.pipeline(transaction=False)
            for call, speaker, index, stats in items:
                if stats.utterances:  # an utterance without a frame is no evidence: it takes no place in the window
                    pipe.hset(self._key(call, speaker), str(index), stats.to_bytes())
            for key in keys:
                pipe.expire(key, self.ttl_s)
                pipe.hgetall(key)
            rows = pipe.execute()[sum(1 for *_, s in items if s.utterances) :][1::2]
        by_key = {key: {int(k): v for k, v in row.items()} for key, row in zip(keys, rows)}
        out = []
        for call, speaker, index, _ in items:
            fields = by_key[self._key(call, speaker)]
            earlier = sorted(i for i in fields if i < index)[-self.window :]
            out.append(FrameStatistics.sum([FrameStatistics.from_bytes(fields[i]) for i in earlier], dim))
        stale = {key: [str(i) for i in sorted(f)[: max(0, len(f) - 2 * self.window)]] for key, f in by_key.items()}
        if any(stale.values()):
            with self.state.guard() as r:
                pipe = r.pipeline(transaction=False)
                for key, names in stale.items():
                    if names:
                        pipe.hdel(key, *names)
                pipe.execute()
        return out
