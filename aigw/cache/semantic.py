"""Semantic cache index: find an earlier answer whose last user turn means the same.

The index maps embeddings of the last user turn to exact-cache keys.  A search
only looks at entries of the same hard partition AND the same scope, where the
scope is a hash of everything else that shapes the answer (system prompt,
tools, tool_choice, response_format, sampling and output fields, and every
other turn).  Memory only, per process; entries may outlive the exact-cache
entry they point to, so a hit whose key is gone from the store is a miss.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from .embed import embed, get_model
from .keys import Partition, _material

Embedder = Callable[[Sequence[str]], np.ndarray]
Fits = Callable[[str], bool]

_LAST_USER = "\0aigw-semantic-last-user-turn\0"


def _last_user_index(messages: Sequence[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, Mapping) and msg.get("role") == "user":
            return i
    return None


def _text_of(content: Any) -> str | None:
    """Plain text of a message content; ``None`` when it holds anything but text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts: list[str] = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping) and part.get("type") == "text" \
                and isinstance(part.get("text"), str):
            parts.append(part["text"])
        else:
            return None  # image, audio, file, tool_result ...: not text-only
    return "\n".join(parts)


def last_user_text(body: Mapping[str, Any]) -> str | None:
    """Text of the last user message; ``None`` if absent, empty or not text-only."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    i = _last_user_index(messages)
    if i is None:
        return None
    text = _text_of(messages[i].get("content"))
    return text if text and text.strip() else None


def semantic_scope(body: Mapping[str, Any], *, api: str = "openai", target: str = "") -> str:
    """Hash of every request field except the last user turn's content.

    That covers model (pass the resolved ``target``; the partition holds it too),
    system prompt(s), tools, tool_choice, response_format, the turns before (and
    after) the last user turn, and sampling/output fields, normalised like
    ``cache_key``.  NEUTRAL fields (stream, user, ...) are left out.
    """
    request = dict(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        i = _last_user_index(messages)
        if i is not None:
            turn = {k: v for k, v in messages[i].items() if k != "content"}
            turn["content"] = _LAST_USER
            request["messages"] = [*messages[:i], turn, *messages[i + 1:]]
    material = {"v": 1, "api": api, "target": target,
                "request": _material(api, request, ())}
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _default_embed(texts: Sequence[str]) -> np.ndarray:
    return embed(texts)


def _default_fits(text: str) -> bool:
    return get_model().fits(text)


class _Bucket:
    """One partition: key -> (scope, vector), in recency order."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self.by_scope: dict[str, dict[str, np.ndarray]] = {}

    def remove(self, key: str) -> None:
        scope, _ = self.entries.pop(key)
        keys = self.by_scope[scope]
        del keys[key]
        if not keys:
            del self.by_scope[scope]


class SemanticIndex:
    """Per-process index of last-user-turn embeddings, capped per partition (LRU).

    ``embed`` and ``fits`` default to the bundled all-MiniLM-L6-v2 model, loaded
    on first use.  Texts longer than the model's window (256 tokens) are neither
    stored nor searched: truncation would make different prompts look identical.
    """

    def __init__(self, max_entries_per_partition: int = 1000, *,
                 embed: Embedder | None = None, fits: Fits | None = None) -> None:
        if max_entries_per_partition < 1:
            raise ValueError("max_entries_per_partition must be >= 1")
        self.max_entries_per_partition = max_entries_per_partition
        self._embed = embed or _default_embed
        self._fits = fits or _default_fits
        self._buckets: dict[Partition, _Bucket] = {}
        self._lock = threading.Lock()

    def _vector(self, text: str) -> np.ndarray | None:
        if not text or not self._fits(text):
            return None
        return np.asarray(self._embed([text])[0], dtype=np.float32)

    def add(self, partition: Partition, scope: str, text: str, key: str) -> None:
        """Remember that ``key`` (an exact-cache key) answers ``text`` in this scope."""
        vec = self._vector(text)
        if vec is None:
            return
        with self._lock:
            bucket = self._buckets.setdefault(partition, _Bucket())
            if key in bucket.entries:
                bucket.remove(key)
            bucket.entries[key] = (scope, vec)
            bucket.by_scope.setdefault(scope, {})[key] = vec
            while len(bucket.entries) > self.max_entries_per_partition:
                bucket.remove(next(iter(bucket.entries)))

    def search(self, partition: Partition, scope: str, text: str,
               threshold: float) -> tuple[str, float] | None:
        """Best ``(key, cosine similarity)`` with similarity >= threshold, else None."""
        with self._lock:
            bucket = self._buckets.get(partition)
            if bucket is None or scope not in bucket.by_scope:
                return None
        vec = self._vector(text)  # embed outside the lock
        if vec is None:
            return None
        with self._lock:
            bucket = self._buckets.get(partition)
            if bucket is None:
                return None
            candidates = bucket.by_scope.get(scope)
            if not candidates:
                return None
            keys = list(candidates)
            sims = np.stack([candidates[k] for k in keys]) @ vec
            best = int(np.argmax(sims))
            similarity = min(1.0, float(sims[best]))
            if similarity < threshold:
                return None
            bucket.entries.move_to_end(keys[best])
            return keys[best], similarity

    def discard(self, partition: Partition, key: str) -> None:
        """Forget ``key`` (e.g. a hit whose exact-cache entry has expired)."""
        with self._lock:
            bucket = self._buckets.get(partition)
            if bucket is not None and key in bucket.entries:
                bucket.remove(key)
                if not bucket.entries:
                    del self._buckets[partition]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(b.entries) for b in self._buckets.values())
