import socket
import time

from shared.cache import FeatureCache, content_key
from shared.settings import load_settings


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_keys_are_content_addressed_and_include_the_model_version():
    a = content_key("text", "me5@abc", "hello")
    assert a == content_key("text", "me5@abc", "hello")
    assert a != content_key("text", "me5@def", "hello")
    assert a != content_key("text", "me5@abc", "hello!")
    assert a.startswith("emotion:text:me5@abc:")
    # parts are length-prefixed: ("ab", "c") and ("a", "bc") differ
    assert content_key("x", "v", "ab", "c") != content_key("x", "v", "a", "bc")


class CountingClient:
    """Wraps a redis client and counts the round trips it attempts."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def mget(self, keys):
        self.calls += 1
        return self.inner.mget(keys)

    def pipeline(self, transaction=False):
        self.calls += 1
        return self.inner.pipeline(transaction=transaction)


def test_cache_degrades_to_no_cache_when_redis_is_down_and_retries_later(tmp_path):
    s = load_settings(home=tmp_path)
    s.redis.port = _closed_port()
    s.redis.retry_after_s = 0.3
    probe = FeatureCache(s)
    client = CountingClient(probe.client)
    cache = FeatureCache(s, client=client)
    assert cache.get_many(["a", "b"]) == [None, None]
    assert cache.available is False and client.calls == 1
    # while marked down, calls return misses without touching Redis
    for _ in range(50):
        assert cache.get("a") is None
        assert cache.put("a", b"1") is False
    assert client.calls == 1
    time.sleep(0.35)
    assert cache.get("a") is None
    assert client.calls == 2  # tried Redis again after retry_after_s
