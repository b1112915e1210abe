"""ai-cache: exact-match answers, hard-partitioned by consumer (or group), route and target."""
from __future__ import annotations

import logging
import time
from typing import Any

from ..cache import CacheUnavailable, Entry, MemoryStore, Partition, RedisStore, cache_key, cacheable
from ..context import Outcome, RequestContext
from .common import off_loop, require_router
from ..redis_conn import RedisSettings
from .limits import redis_prefix

log = logging.getLogger("aigw")

_STORES: dict[tuple, Any] = {}
_SEMANTIC: Any = None  # one SemanticIndex per process (it partitions internally)


def _semantic_index():
    global _SEMANTIC
    if _SEMANTIC is None:
        from ..cache.semantic import SemanticIndex
        _SEMANTIC = SemanticIndex()
    return _SEMANTIC


def _store(cfg: dict[str, Any]):
    max_entry = int(cfg.get("max_entry_bytes", 1048576))
    settings = RedisSettings.from_config(cfg, 250)
    key = (cfg.get("policy", "memory"), settings.key(), max_entry)
    st = _STORES.get(key)
    if st is None:
        if key[0] == "redis":
            st = RedisStore(prefix=redis_prefix() + "cache:", max_entry_bytes=max_entry,
                            settings=settings)
        else:
            st = MemoryStore(max_entries=4096, max_entry_bytes=max_entry)
        _STORES[key] = st
    return st


class CacheRuntime:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.store = _store(cfg)
        self.ttl = int(cfg.get("ttl", 300))
        self.by_group = cfg.get("partition_by", "consumer") == "group"
        self.needs_groups = self.by_group
        # the partition's "route": explicit, else the route this plugin is scoped to,
        # else the plugin entity (a service-wide plugin is one partition per service)
        self.route = cfg.get("route") or cfg.get("route_id") or cfg.get("__plugin_id") or "default"
        sem = cfg.get("semantic") or {}
        self.semantic = bool(sem.get("enabled"))
        self.threshold = float(sem.get("threshold", 0.95))
        if self.semantic:
            from ..cache.embed import get_model
            get_model()  # load once at instance start (fails the config if the model is missing)

    def access(self, ctx: RequestContext) -> None:
        require_router(ctx, "ai-cache")
        if ctx.api not in ("chat", "anthropic", "responses") or not ctx.plan:
            return
        ok, reason = cacheable(ctx.canonical, ctx.headers,
                               allow_nondeterministic=bool(self.cfg.get("allow_nondeterministic")))
        if ctx.api == "anthropic" and isinstance(ctx.body, dict) and ctx.body.get("thinking"):
            ok, reason = False, "thinking"  # a replay could not give back the signed thinking blocks
        if not ok and reason != "refresh":
            ctx.cache_status = "Bypass"
            ctx.extra_headers["X-Cache-Status"] = "Bypass"
            return
        who = ctx.consumer_name or "anonymous"
        if self.by_group:
            who = "group:" + (sorted(ctx.groups)[0] if ctx.groups else who)
        part = Partition(consumer=who, route=str(self.route), target=ctx.plan[0].key)
        key = cache_key(part, "chat", ctx.canonical)
        ctx.extra_headers["X-Cache-Key"] = key.rsplit(":", 1)[-1][:32]
        sem_text = sem_scope = None
        if reason == "refresh":
            ctx.cache_status = "Refresh"
        else:
            try:
                entry = self.store.get(key)
            except CacheUnavailable:
                entry = None
                ctx.cache_status = "Bypass"
                ctx.extra_headers["X-Cache-Status"] = "Bypass"
                return
            if entry is None and self.semantic:
                entry, sem_text, sem_scope = self._semantic_lookup(ctx, part)
            if entry is not None:
                ctx.cache_entry = entry
                ctx.cache_status = "Hit"
                ctx.plan = [t for t in ctx.plan if t.key == part.target] or ctx.plan
                ctx.extra_headers["X-Cache-Status"] = "Hit"
                ctx.extra_headers["X-Cache-Age"] = str(max(0, int(time.time() - entry.created)))
                return
            ctx.cache_status = "Miss"
        if reason == "refresh" and self.semantic:
            from ..cache.semantic import last_user_text, semantic_scope
            sem_text = last_user_text(ctx.canonical)
            sem_scope = semantic_scope(ctx.canonical, target=part.target) if sem_text else None
        ctx.extra_headers["X-Cache-Status"] = ctx.cache_status
        store, ttl = self.store, self.ttl

        def save(o: Outcome) -> None:
            if o.status != 200 or not o.response or o.target is None or o.target.key != part.target:
                return
            entry = Entry(response=o.response, created=time.time(), model=o.target.model,
                          provider=o.target.provider.name,
                          usage=o.usage.to_openai() if o.usage is not None else {})
            try:
                stored = store.set(key, entry, ttl)
            except CacheUnavailable:
                log.warning("aigw cache store unavailable; answer not cached")
                return
            if stored is not False and sem_text:
                try:
                    off_loop(_semantic_index().add, part, sem_scope, sem_text, key)
                except Exception as exc:
                    log.warning("aigw semantic index add failed: %s", type(exc).__name__)

        ctx.on_finish(save)

    def _semantic_lookup(self, ctx: RequestContext, part: Partition):
        """Nearest earlier answer for the last user turn, in the same partition and scope
        (same model, system prompt, tools, parameters and earlier turns)."""
        from ..cache.semantic import last_user_text, semantic_scope
        text = last_user_text(ctx.canonical)
        if not text:
            return None, None, None
        scope = semantic_scope(ctx.canonical, target=part.target)
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
        ctx.extra_headers["X-Cache-Similarity"] = f"{similarity:.4f}"
        ctx.extra_headers["X-Cache-Key"] = key.rsplit(":", 1)[-1][:32]
        ctx.log_fields["aigw.cache.similarity"] = round(similarity, 4)
        return entry, None, None
