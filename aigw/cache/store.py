"""Cache entries and stores: in-process LRU+TTL and Redis.

Stores keep serialised bytes, so every ``get`` returns a fresh copy: the
caller restores placeholders into the hit's response in place without ever
touching the stored answer.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis

from aigw.redis_conn import RedisSettings, connect

DEFAULT_MAX_ENTRY_BYTES = 1 << 20


class CacheUnavailable(Exception):
    """The cache backend failed; the caller bypasses the cache."""


@dataclass
class Entry:
    """A stored answer: canonical OpenAI chat.completion, placeholders NOT restored."""

    response: dict[str, Any]
    created: float
    model: str
    provider: str
    usage: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> bytes:
        # not dataclasses.asdict: it deep-copies the whole response first
        return orjson.dumps({"response": self.response, "created": self.created,
                             "model": self.model, "provider": self.provider,
                             "usage": self.usage})

    @classmethod
    def loads(cls, raw: bytes | str) -> Entry | None:
        """Decode; ``None`` for anything that is not a well-formed entry."""
        try:
            d = orjson.loads(raw)
            if not isinstance(d, dict) or not isinstance(d.get("response"), dict):
                return None
            return cls(response=d["response"], created=float(d["created"]),
                       model=str(d["model"]), provider=str(d["provider"]),
                       usage=d.get("usage") or {})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class CacheStore(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def set(self, key: str, entry: Entry, ttl: int) -> bool:
        """Store for ``ttl`` seconds; ``False`` when skipped (too large, ttl <= 0)."""
        ...

    def delete(self, key: str) -> None: ...


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class MemoryStore:
    """Process-local LRU with per-entry TTL and a cap on entry count."""

    def __init__(self, max_entries: int = 1024, *,
                 max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Entry | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, raw = item
            if self._clock() >= expires:
                del self._data[key]
                return None
            self._data.move_to_end(key)
        return Entry.loads(raw)

    def set(self, key: str, entry: Entry, ttl: int) -> bool:
        raw = entry.dumps()
        if ttl <= 0 or len(raw) > self.max_entry_bytes:
            return False
        with self._lock:
            self._data[key] = (self._clock() + ttl, raw)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def purge_expired(self) -> int:
        now = self._clock()
        with self._lock:
            dead = [k for k, (exp, _) in self._data.items() if now >= exp]
            for k in dead:
                del self._data[k]
        return len(dead)


class RedisStore:
    """Redis-backed store.  Any backend error raises :class:`CacheUnavailable`.

    After a failure the store stays "open" for ``cooldown`` seconds and fails
    fast, so a dead Redis costs one timeout, not one per request.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "aigw:cache:",
                 timeout: float = 0.25, *, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
                 cooldown: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 client: Any = None, settings: Any = None) -> None:
        self.prefix = prefix
        self.max_entry_bytes = max_entry_bytes
        self.cooldown = cooldown
        self._clock = clock
        self._open_until = 0.0
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError,
                                                          redis.exceptions.RedisClusterException)
        self._redis = client or connect(settings or RedisSettings(url=url, timeout=timeout),
                                        fail_fast=True)  # standalone, Sentinel or Cluster

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._clock() < self._open_until:
            raise CacheUnavailable("cache backend unavailable (cooling down)")
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            self._open_until = self._clock() + self.cooldown
            # no str(exc): it may name hosts; the class is enough to diagnose
            raise CacheUnavailable(f"cache backend unavailable: {type(exc).__name__}") from None

    def get(self, key: str) -> Entry | None:
        raw = self._call(self._redis.get, self.prefix + key)
        return None if raw is None else Entry.loads(raw)

    def set(self, key: str, entry: Entry, ttl: int) -> bool:
        raw = entry.dumps()
        if ttl <= 0 or len(raw) > self.max_entry_bytes:
            return False
        self._call(self._redis.set, self.prefix + key, raw, ex=int(ttl))
        return True

    def delete(self, key: str) -> None:
        self._call(self._redis.delete, self.prefix + key)

    def purge_partition(self, partition_prefix: str, batch: int = 500) -> int:
        """Delete every entry of one partition (``Partition.prefix()``)."""
        n = 0
        keys: list[bytes] = []
        pattern = _glob_escape(f"{self.prefix}{partition_prefix}:") + "*"
        for k in self._call(lambda: list(self._redis.scan_iter(match=pattern, count=batch))):
            keys.append(k)
            if len(keys) >= batch:
                n += self._call(self._redis.delete, *keys)
                keys = []
        if keys:
            n += self._call(self._redis.delete, *keys)
        return n

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._redis.close()
