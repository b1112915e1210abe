"""ai-cache: exact-match answers, hard-partitioned by consumer (or group), route and target."""
from __future__ import annotations

import logging
import time
from typing import Any

from ..cache import CacheUnavailable, Entry, MemoryStore, Partition, RedisStore, cache_key, cacheable
from ..context import Outcome, RequestContext
from .common import require_router
from .limits import redis_prefix

log = logging.getLogger("aigw")

_STORES: dict[tuple, Any] = {}


def _store(cfg: dict[str, Any]):
    max_entry = int(cfg.get("max_entry_bytes", 1048576))
    key = (cfg.get("policy", "memory"), cfg.get("redis_url"), cfg.get("redis_timeout_ms"), max_entry)
    st = _STORES.get(key)
    if st is None:
        if key[0] == "redis":
            st = RedisStore(cfg["redis_url"], prefix=redis_prefix() + "cache:",
                            timeout=cfg.get("redis_timeout_ms", 250) / 1000.0, max_entry_bytes=max_entry)
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

    def access(self, ctx: RequestContext) -> None:
        require_router(ctx, "ai-cache")
        if ctx.api not in ("chat", "anthropic") or not ctx.plan:
            return
        ok, reason = cacheable(ctx.canonical, ctx.headers,
                               allow_nondeterministic=bool(self.cfg.get("allow_nondeterministic")))
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
            if entry is not None:
                ctx.cache_entry = entry
                ctx.cache_status = "Hit"
                ctx.plan = [t for t in ctx.plan if t.key == part.target] or ctx.plan
                ctx.extra_headers["X-Cache-Status"] = "Hit"
                ctx.extra_headers["X-Cache-Age"] = str(max(0, int(time.time() - entry.created)))
                return
            ctx.cache_status = "Miss"
        ctx.extra_headers["X-Cache-Status"] = ctx.cache_status
        store, ttl = self.store, self.ttl

        def save(o: Outcome) -> None:
            if o.status != 200 or not o.response or o.target is None or o.target.key != part.target:
                return
            entry = Entry(response=o.response, created=time.time(), model=o.target.model,
                          provider=o.target.provider.name,
                          usage=o.usage.to_openai() if o.usage is not None else {})
            try:
                store.set(key, entry, ttl)
            except CacheUnavailable:
                log.warning("aigw cache store unavailable; answer not cached")

        ctx.on_finish(save)
