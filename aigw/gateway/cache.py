"""ai-cache: exact-match answers, hard-partitioned by consumer (or group), route and target."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..cache import (
    CacheStore,
    CacheUnavailable,
    Entry,
    MemoryStore,
    Partition,
    RedisStore,
    cache_key,
    cacheable,
    replay_stream,
)
from ..context import Outcome, RequestContext, Slice
from ..pipeline import Exchange, Replay, Stage
from ..redis_conn import RedisSettings
from .common import off_loop, require_router
from .limits import redis_prefix

if TYPE_CHECKING:
    from ..cache.semantic import SemanticIndex

log = logging.getLogger("aigw")

_STORES: dict[tuple[Any, ...], CacheStore] = {}
_SEMANTIC: SemanticIndex | None = None  # one per process (it partitions internally)

# The semantic cache (aigw.cache.semantic, aigw.cache.embed) is imported only by an instance
# with semantic caching on: it brings numpy and safetensors, ~94 modules and ~0.07 s of CPU at
# every plugin-server start otherwise (docs/lint.md).


def _semantic_index() -> SemanticIndex:
    global _SEMANTIC
    if _SEMANTIC is None:
        from ..cache.semantic import SemanticIndex  # noqa: PLC0415 (start-up cost: numpy, only with semantic caching)
        _SEMANTIC = SemanticIndex()
    return _SEMANTIC


def _semantic_text(canonical: dict[str, Any], target: str) -> tuple[str | None, str | None]:
    """The last user turn a semantic lookup matches on, and the scope it must match in."""
    from ..cache.semantic import (  # noqa: PLC0415 (start-up cost: numpy, only with semantic caching)
        last_user_text,
        semantic_scope,
    )
    text = last_user_text(canonical)
    return (text, semantic_scope(canonical, target=target)) if text else (None, None)


def _store(cfg: dict[str, Any]) -> CacheStore:
    max_entry = int(cfg["max_entry_bytes"])
    settings = RedisSettings.from_config(cfg, 250)
    key = (cfg["policy"], settings.key(), max_entry)
    st: CacheStore | None = _STORES.get(key)
    if st is None:
        if key[0] == "redis":
            st = RedisStore(prefix=redis_prefix() + "cache:", max_entry_bytes=max_entry,
                            settings=settings)
        else:
            st = MemoryStore(max_entries=4096, max_entry_bytes=max_entry)
        _STORES[key] = st
    return st


# cache statuses after which the answer is stored (Bypass and Hit store nothing)
_STORES_ANSWER = ("Miss", "Refresh")


@dataclass(slots=True)
class CacheState(Slice):
    """ai-cache's part of a request: its status and headers, and where a miss is stored."""

    status: str | None = None                 # Hit | Miss | Refresh | Bypass
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    partition: Partition | None = None
    sem_text: str | None = None
    sem_scope: str | None = None
    similarity: float | None = None

    def log_fields(self) -> dict[str, Any]:
        return {"aigw.cache.similarity": round(self.similarity, 4)} if self.similarity is not None else {}


class CacheStage(Stage):
    """Answers from the cache before any provider call (an early answer), and stores the
    provider's canonical answer when the request finishes."""

    name = "ai-cache"
    priority = 772

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        self.cfg = cfg = self.config  # schema-validated: defaults from schemas/ai-cache.json
        self.store = _store(cfg)
        self.ttl = int(cfg["ttl"])
        self.by_group = cfg["partition_by"] == "group"
        self.needs_groups = self.by_group
        # the partition's "route": explicit, else the route this plugin is scoped to,
        # else the plugin entity (a service-wide plugin is one partition per service)
        self.route = cfg.get("route") or cfg.get("route_id") or cfg.get("__plugin_id") or "default"
        sem = cfg.get("semantic") or {}
        self.semantic = bool(sem.get("enabled"))
        self.threshold = float(sem.get("threshold", 0.95))
        if self.semantic:
            from ..cache.embed import get_model  # noqa: PLC0415 (start-up cost: numpy, only with semantic caching)
            get_model()  # load once at instance start (fails the config if the model is missing)

    def request(self, ctx: RequestContext) -> None:
        require_router(ctx, "ai-cache")
        canonical = ctx.canonical
        if ctx.api not in ("chat", "anthropic", "responses") or not ctx.plan or canonical is None:
            return
        st = ctx.slot(CacheState)
        ok, reason = cacheable(canonical, ctx.headers,
                               allow_nondeterministic=bool(self.cfg.get("allow_nondeterministic")))
        if ctx.api == "anthropic" and isinstance(ctx.body, dict) and ctx.body.get("thinking"):
            ok, reason = False, "thinking"  # a replay could not give back the signed thinking blocks
        if not ok and reason != "refresh":
            st.status = "Bypass"
            st.headers["X-Cache-Status"] = "Bypass"
            return
        who = ctx.consumer_name or "anonymous"
        if self.by_group:
            who = "group:" + (sorted(ctx.groups)[0] if ctx.groups else who)
        part = Partition(consumer=who, route=str(self.route), target=ctx.plan[0].key)
        key = cache_key(part, "chat", canonical)
        st.headers["X-Cache-Key"] = key.rsplit(":", 1)[-1][:32]
        if reason == "refresh":
            st.status = "Refresh"
        else:
            try:
                entry = self.store.get(key)
            except CacheUnavailable:
                st.status = "Bypass"
                st.headers["X-Cache-Status"] = "Bypass"
                return
            if entry is None and self.semantic:
                entry = self._semantic_lookup(canonical, part, st)
            if entry is not None:
                st.status = "Hit"
                ctx.plan = [t for t in ctx.plan if t.key == part.target] or ctx.plan
                st.headers["X-Cache-Status"] = "Hit"
                st.headers["X-Cache-Age"] = str(max(0, int(time.time() - entry.created)))
                ctx.answer_early(Replay(response=entry.response, usage=entry.usage,
                                        target=ctx.plan[0] if ctx.plan else None,
                                        chunks=lambda: replay_stream(entry)))
                return
            st.status = "Miss"
        if reason == "refresh" and self.semantic:
            st.sem_text, st.sem_scope = _semantic_text(canonical, part.target)
        st.headers["X-Cache-Status"] = st.status
        st.key, st.partition = key, part

    def keeps_answer(self, ctx: RequestContext) -> bool:
        st = ctx.slots.get(CacheState)
        return isinstance(st, CacheState) and st.status in _STORES_ANSWER

    def headers(self, ctx: RequestContext, ex: Exchange, headers: list[tuple[str, str]]) -> None:
        st = ctx.slots.get(CacheState)
        if isinstance(st, CacheState):
            ex.outcome.cache_status = st.status
            headers.extend(st.headers.items())

    def response(self, ctx: RequestContext, ex: Exchange) -> None:
        if ex.replayed:
            ex.trailer["cached"] = True  # the stream's final usage chunk says it was a replay

    def finish(self, ctx: RequestContext, o: Outcome) -> None:
        st = ctx.slots.get(CacheState)
        if not isinstance(st, CacheState) or st.key is None or st.partition is None:
            return
        part, key = st.partition, st.key
        if o.status != 200 or not o.response or o.target is None or o.target.key != part.target:
            return
        entry = Entry(response=o.response, created=time.time(), model=o.target.model,
                      provider=o.target.provider.name,
                      usage=o.usage.to_openai() if o.usage is not None else {})
        try:
            stored = self.store.set(key, entry, self.ttl)
        except CacheUnavailable:
            log.warning("aigw cache store unavailable; answer not cached")
            return
        if stored is not False and st.sem_text and st.sem_scope is not None:
            try:
                off_loop(_semantic_index().add, part, st.sem_scope, st.sem_text, key)
            except Exception as exc:
                log.warning("aigw semantic index add failed: %s", type(exc).__name__)

    def _semantic_lookup(self, canonical: dict[str, Any], part: Partition,
                         st: CacheState) -> Entry | None:
        """Nearest earlier answer for the last user turn, in the same partition and scope
        (same model, system prompt, tools, parameters and earlier turns); on no hit, the
        text and scope a miss is indexed under."""
        entry, st.sem_text, st.sem_scope = self._semantic_find(canonical, part, st)
        return entry

    def _semantic_find(self, canonical: dict[str, Any], part: Partition,
                       st: CacheState) -> tuple[Entry | None, str | None, str | None]:
        text, scope = _semantic_text(canonical, part.target)
        if not text or scope is None:
            return None, None, None
        index = _semantic_index()
        try:
            found = off_loop(index.search, part, scope, text, self.threshold)
        except Exception as exc:
            log.warning("aigw semantic search failed: %s", type(exc).__name__)
            return None, text, scope
        if found is None:
            return None, text, scope
        key, similarity = found
        try:
            entry = self.store.get(key)
        except CacheUnavailable:
            return None, text, scope
        if entry is None:
            index.discard(part, key)
            return None, text, scope
        st.headers["X-Cache-Similarity"] = f"{similarity:.4f}"
        st.headers["X-Cache-Key"] = key.rsplit(":", 1)[-1][:32]
        st.similarity = similarity
        return entry, None, None


CacheRuntime = CacheStage  # the name aigw.validate builds instances by
