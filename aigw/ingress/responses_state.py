"""Conversation state behind ``previous_response_id`` (Responses API).

Each stored response keeps the conversation as the *client* sees it
(canonical chat messages: earlier turns, this turn's input, the answer with
placeholders restored), never the instructions (OpenAI's API does not carry
them to the next turn).  The next turn is rebuilt from it and scanned by
ai-redact as a whole, so redaction numbering stays consistent per request.

Keys are scoped to the tenant: ``<prefix>resp:<sha256(consumer)>:<id>``; a
consumer asking for another consumer's response id gets "not found".  Entries
expire after ``ttl`` seconds.  ``store: false`` responses are never written.
Redis when configured (shared by every gateway node), process memory
otherwise.  A store that fails refuses the lookup with a 503 (the
conversation cannot be rebuilt) but never fails a response being saved.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aigw.errors import GatewayError
from aigw.gateway.limits import redis_prefix

log = logging.getLogger("aigw")

MAX_ENTRY_BYTES = 8 * 1024 * 1024


class StateUnavailable(GatewayError):
    def __init__(self) -> None:
        super().__init__(503, "The conversation store is unavailable, so previous_response_id "
                              "cannot be resolved.", code="response_store_unavailable")


def not_found(response_id: str) -> GatewayError:
    rid = response_id if len(response_id) <= 80 else response_id[:77] + "..."
    return GatewayError(400, f"Previous response with id '{rid}' not found.",
                        code="previous_response_not_found", param="previous_response_id")


def _tenant(consumer: str | None) -> str:
    return hashlib.sha256((consumer or "anonymous").encode()).hexdigest()[:32]


class MemoryState:
    def __init__(self, ttl: int, max_entries: int = 10000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, consumer: str | None, response_id: str) -> dict[str, Any] | None:
        key = f"{_tenant(consumer)}:{response_id}"
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                self._items.pop(key, None)
                return None
        state: dict[str, Any] = orjson.loads(hit[1])
        return state

    def put(self, consumer: str | None, response_id: str, state: dict[str, Any]) -> None:
        raw = orjson.dumps(state)
        if len(raw) > MAX_ENTRY_BYTES:
            return
        key = f"{_tenant(consumer)}:{response_id}"
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, raw)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


class RedisState:
    def __init__(self, url: str, prefix: str, ttl: int, timeout: float = 0.5):
        self.ttl = ttl
        self.prefix = prefix
        self._errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout,
                                           retry=Retry(NoBackoff(), 0), health_check_interval=0)

    def _key(self, consumer: str | None, response_id: str) -> str:
        return f"{self.prefix}resp:{_tenant(consumer)}:{response_id}"

    def get(self, consumer: str | None, response_id: str) -> dict[str, Any] | None:
        try:
            raw = self._redis.get(self._key(consumer, response_id))
        except self._errors:
            raise StateUnavailable() from None
        return None if raw is None else orjson.loads(raw)

    def put(self, consumer: str | None, response_id: str, state: dict[str, Any]) -> None:
        raw = orjson.dumps(state)
        if len(raw) > MAX_ENTRY_BYTES:
            return
        try:
            self._redis.set(self._key(consumer, response_id), raw, ex=self.ttl)
        except self._errors as exc:  # the answer was already given; only the next turn suffers
            log.warning("aigw responses state not saved: %s", type(exc).__name__)


_STORES: dict[tuple[Any, ...], Any] = {}


def state_store(cfg: dict[str, Any] | None) -> MemoryState | RedisState:
    """One store per distinct config in this process."""
    cfg = cfg or {}
    ttl = int(cfg.get("ttl") or 86400)
    policy = cfg.get("policy") or "memory"
    key = (policy, cfg.get("redis_url"), ttl, redis_prefix())
    st = _STORES.get(key)
    if st is None:
        if policy == "redis":
            st = RedisState(cfg["redis_url"], redis_prefix(), ttl,
                            timeout=(cfg.get("redis_timeout_ms") or 500) / 1000.0)
        else:
            st = MemoryState(ttl)
        _STORES[key] = st
    return st
