"""Redis feature cache.

Keys are content-addressed and include the model version, so a new model never reads an old
model's features: ``emotion:{kind}:{model_version}:{sha256(content)}``.  Every entry has a TTL.
When Redis is unreachable the cache degrades to "no cache" (misses, skipped writes) and tries
Redis again after ``settings.redis.retry_after_s``; callers never see a Redis error.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.settings import Settings

log = logging.getLogger(__name__)


def content_key(kind: str, model_version: str, *parts: bytes | str) -> str:
    """``emotion:{kind}:{model_version}:{sha256 of the parts}``."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return f"emotion:{kind}:{model_version}:{h.hexdigest()}"


class FeatureCache:
    """Get/put byte values by key, tolerant of Redis being down."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self._settings = settings
        self._client = client or redis.Redis(
            host=settings.redis.host,
            port=settings.redis.port,
            password=settings.redis_password,
            db=settings.redis.db,
            socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.socket_timeout_s,
            retry=Retry(NoBackoff(), 0),  # a cache fails fast; the caller carries on without it
        )
        self._down_until = 0.0
        self.available = True

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if self.available:
            log.warning(
                "redis unavailable (%s); running without cache for %.0f s", exc, self._settings.redis.retry_after_s
            )
        self.available = False
        self._down_until = time.monotonic() + self._settings.redis.retry_after_s

    def _ok(self) -> None:
        if not self.available:
            log.info("redis is back; cache enabled again")
        self.available = True

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys or not self._usable():
            return [None] * len(keys)
        try:
            values = self._client.mget(keys)
        except redis.RedisError as exc:
            self._failed(exc)
            return [None] * len(keys)
        self._ok()
        return list(values)

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl_s: int | None = None) -> bool:
        items = list(items)
        if not items or not self._usable():
            return False
        ttl = ttl_s or self._settings.redis.feature_ttl_s
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(key, value, ex=ttl)
                pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def put(self, key: str, value: bytes, ttl_s: int | None = None) -> bool:
        return self.put_many([(key, value)], ttl_s)

    @property
    def client(self) -> redis.Redis:
        """The underlying client, for state that is not a cache (e.g. join buffers)."""
        return self._client
