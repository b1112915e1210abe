"""MemoryStore and RedisStore (real Redis at 127.0.0.1:6379)."""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from aigw.cache import CacheUnavailable, Entry, MemoryStore, Partition, RedisStore, cache_key

REDIS_URL = os.environ.get("AIGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(text: str = "hi <PERSON_1>") -> Entry:
    return Entry(
        response={"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "logprobs": None, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
        created=1700000000.5, model="gpt-4o", provider="openai",
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})


# -- Entry -----------------------------------------------------------------

def test_entry_round_trip_and_garbage():
    e = entry()
    assert Entry.loads(e.dumps()) == e
    assert Entry.loads(b"not json") is None
    assert Entry.loads(b'{"response": 1}') is None
    assert Entry.loads(b"[]") is None


# -- MemoryStore -----------------------------------------------------------

def test_memory_ttl_expiry():
    clock = FakeClock()
    s = MemoryStore(10, clock=clock)
    assert s.set("k", entry(), ttl=60)
    clock.now += 59.9
    assert s.get("k") == entry()
    clock.now += 0.1
    assert s.get("k") is None
    assert len(s) == 0


def test_memory_lru_cap_evicts_least_recently_used():
    s = MemoryStore(3, clock=FakeClock())
    for k in "abc":
        s.set(k, entry(k), 60)
    assert s.get("a") is not None      # a is now most recent
    s.set("d", entry("d"), 60)         # evicts b
    assert len(s) == 3
    assert s.get("b") is None
    assert [s.get(k).response["choices"][0]["message"]["content"] for k in "acd"] == ["a", "c", "d"]


def test_memory_skips_oversized_entry_and_bad_ttl():
    limit = len(entry().dumps()) + 50
    s = MemoryStore(10, max_entry_bytes=limit, clock=FakeClock())
    assert s.set("big", entry("x" * 100), 60) is False
    assert s.get("big") is None
    assert s.set("zero", entry(), 0) is False
    assert s.set("ok", entry(), 1) is True


def test_memory_get_returns_independent_copy():
    s = MemoryStore(10, clock=FakeClock())
    s.set("k", entry("hi <PERSON_1>"), 60)
    hit = s.get("k")
    hit.response["choices"][0]["message"]["content"] = "hi Alice"  # caller restores in place
    assert s.get("k").response["choices"][0]["message"]["content"] == "hi <PERSON_1>"


def test_memory_delete_and_purge_expired():
    clock = FakeClock()
    s = MemoryStore(10, clock=clock)
    s.set("a", entry(), 10)
    s.set("b", entry(), 100)
    s.delete("b")
    assert s.get("b") is None
    clock.now += 11
    assert s.purge_expired() == 1
    assert len(s) == 0


# -- RedisStore ------------------------------------------------------------

needs_redis = pytest.mark.redis  # tests/conftest.py: fails, never skips, without Redis


@pytest.fixture
def redis_store():
    prefix = f"aigw:test:{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix=prefix, timeout=1.0)
    yield store
    import redis
    r = redis.Redis.from_url(REDIS_URL)
    for k in r.scan_iter(match=prefix + "*"):
        r.delete(k)
    r.close()
    store.close()


@needs_redis
def test_redis_round_trip_with_ttl(redis_store):
    import redis
    key = cache_key(Partition("alice", "chat", "openai/gpt-4o"), "openai",
                    {"messages": [{"role": "user", "content": "hi"}], "temperature": 0})
    assert redis_store.get(key) is None
    assert redis_store.set(key, entry(), ttl=120) is True
    assert redis_store.get(key) == entry()
    ttl = redis.Redis.from_url(REDIS_URL).ttl(redis_store.prefix + key)
    assert 0 < ttl <= 120
    redis_store.delete(key)
    assert redis_store.get(key) is None


@needs_redis
def test_redis_skips_oversized(redis_store):
    small = RedisStore(REDIS_URL, prefix=redis_store.prefix,
                       max_entry_bytes=len(entry().dumps()) + 50)
    assert small.set("big", entry("x" * 100), 60) is False
    assert small.set("fits", entry(), 60) is True
    assert redis_store.get("big") is None


@needs_redis
def test_redis_purge_partition_only_touches_that_partition(redis_store):
    a = Partition("alice", "chat", "openai/gpt-4o")
    b = Partition("bob", "chat", "openai/gpt-4o")
    msgs = [{"messages": [{"role": "user", "content": str(i)}], "temperature": 0} for i in range(3)]
    for m in msgs:
        redis_store.set(cache_key(a, "openai", m), entry(), 60)
        redis_store.set(cache_key(b, "openai", m), entry(), 60)
    assert redis_store.purge_partition(a.prefix()) == 3
    assert all(redis_store.get(cache_key(a, "openai", m)) is None for m in msgs)
    assert all(redis_store.get(cache_key(b, "openai", m)) is not None for m in msgs)


@needs_redis
def test_redis_garbage_value_is_a_miss(redis_store):
    import redis
    redis.Redis.from_url(REDIS_URL).set(redis_store.prefix + "junk", b"\x00not-json", ex=60)
    assert redis_store.get("junk") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_unavailable_on_closed_port():
    store = RedisStore(f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.25)
    with pytest.raises(CacheUnavailable) as info:
        store.get("k")
    assert "127.0.0.1" not in str(info.value)
    with pytest.raises(CacheUnavailable):
        store.set("k", entry(), 60)


def test_redis_cooldown_fails_fast_then_retries():
    import redis

    class Broken:
        calls = 0

        def get(self, key):
            Broken.calls += 1
            raise redis.ConnectionError("boom")

    clock = FakeClock()
    store = RedisStore(prefix="p:", cooldown=2.0, clock=clock, client=Broken())
    with pytest.raises(CacheUnavailable):
        store.get("k")
    with pytest.raises(CacheUnavailable):
        store.get("k")
    assert Broken.calls == 1          # second call never reached the backend
    clock.now += 2.0
    with pytest.raises(CacheUnavailable):
        store.get("k")
    assert Broken.calls == 2
