"""Response cache core: keys, partitions, stores, stream replay/assembly.

Pure logic plus two stores; the ai-cache plugin (access phase) and the relay
(response side) call it.  Redaction comes first: keys are computed from the
redacted body and answers are stored with placeholders un-restored.
"""
from .keys import (
    DEFAULT_VARY,
    MULTIPLE_CHOICES,
    NEUTRAL,
    NO_STORE,
    NONDETERMINISTIC,
    OK,
    REFRESH,
    UNSUPPORTED,
    Partition,
    cache_key,
    cacheable,
)
from .store import CacheStore, CacheUnavailable, Entry, MemoryStore, RedisStore
from .stream import assemble_stream, replay_stream

__all__ = [
    "DEFAULT_VARY", "NEUTRAL", "OK", "REFRESH", "NO_STORE", "NONDETERMINISTIC",
    "MULTIPLE_CHOICES", "UNSUPPORTED", "Partition", "cache_key", "cacheable",
    "CacheStore", "CacheUnavailable", "Entry", "MemoryStore", "RedisStore",
    "assemble_stream", "replay_stream",
]
