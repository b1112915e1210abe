"""Which instance of each AI plugin Kong runs for a request, known inside the plugin server.

Kong starts a plugin instance in the plugin server (``plugin.StartInstance``) with the
plugin's config, to which it adds the scope of the plugin entity: ``route_id``,
``service_id``, ``consumer_id``, ``__plugin_id`` and ``__seq__``
(kong/runloop/plugins_iterator.lua 3.9.1, ``get_plugin_config`` 157-190). So once a
route's plugins have run once, this process knows the route's whole pipeline, and a
request needs no plugin-server round trip per plugin to find its configs: the relay asks
this registry, with the route, service and consumer of the request, for the instance of
each plugin that Kong itself picks.

Kong's pick (plugins_iterator.lua 215-266, ``lookup_cfg``): per plugin name, the most
specific configured scope wins, in this order: route+service+consumer, route+consumer,
service+consumer, route+service, consumer, route, service, global.

Config changes: every rebuild of Kong's plugin iterator gives every plugin a new ``__seq__``
(plugins_iterator.lua 179-188, a counter shared by the workers); Kong then starts a new
instance for that plugin id and closes the previous one (plugin_servers/plugin.lua 258-299).
So for a plugin id the instance with the highest ``__seq__`` is the current one. A plugin
entity that was deleted is never closed by Kong: its instance is dropped here once no event
of it was seen for ``STALE_AFTER`` seconds (every request Kong runs a plugin for is an
event, so a live instance is seen with every request of its routes).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Scope = tuple[str | None, str | None, str | None]

# seconds after which an instance no event was seen of stops applying (AIGW_INSTANCE_STALE_AFTER):
# how long a plugin deleted from Kong's config keeps applying on this node
STALE_AFTER = float(os.environ.get("AIGW_INSTANCE_STALE_AFTER", "30"))


@dataclass(eq=False)
class Instance:
    """One started plugin instance: its name, priority, Kong scope and the plugin object."""

    name: str
    order: int          # the pipeline's order (highest first), not always Kong's priority
    plugin: Any
    plugin_id: str
    seq: int
    route_id: str | None
    service_id: str | None
    consumer_id: str | None
    seen: float = field(default_factory=time.monotonic)
    # the service of a route-scoped instance's route, read once (aigw/plugin_base.py)
    route_service: str | None = None
    route_service_read: bool = False

    def touch(self) -> None:
        self.seen = time.monotonic()


def _scope_of(config: dict[str, Any]) -> Scope:
    def norm(v: Any) -> str | None:
        return v if isinstance(v, str) and v else None
    return norm(config.get("route_id")), norm(config.get("service_id")), norm(config.get("consumer_id"))


def _seq(config: dict[str, Any]) -> int:
    seq = config.get("__seq__")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


class Registry:
    """Started instances by plugin name; the current one per Kong plugin id."""

    # Used on the plugin server's gevent loop only (events and the relay), and no method
    # yields, so no lock is needed.
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_name: dict[str, dict[str, Instance]] = {}
        self._clock = clock

    def register(self, name: str, order: int, config: dict[str, Any], plugin: Any) -> Instance:
        route_id, service_id, consumer_id = _scope_of(config)
        # without Kong's id (tests that build a plugin by hand) every instance is its own
        plugin_id = config.get("__plugin_id") or f"local:{id(plugin)}"
        inst = Instance(name=name, order=order, plugin=plugin, plugin_id=str(plugin_id),
                        seq=_seq(config), route_id=route_id, service_id=service_id,
                        consumer_id=consumer_id, seen=self._clock())
        self._put(inst)
        return inst

    def _put(self, inst: Instance) -> None:
        by_id = self._by_name.setdefault(inst.name, {})
        old = by_id.get(inst.plugin_id)
        # each nginx worker starts its own instance of a plugin id; a later __seq__ is a
        # later config of it (an older one arriving late never replaces it)
        if old is None or (old is not inst and inst.seq >= old.seq):
            by_id[inst.plugin_id] = inst

    def touch(self, inst: Instance) -> None:
        """An event of this instance ran: it is live (and back in, if it had gone stale)."""
        inst.seen = self._clock()
        if self._by_name.get(inst.name, {}).get(inst.plugin_id) is not inst:
            self._put(inst)

    def pick(self, name: str, route_id: str | None, service_id: str | None,
             consumer_id: str | None) -> Instance | None:
        """The instance of ``name`` Kong runs for this scope (lookup_cfg's order), or None."""
        now = self._clock()
        combos: dict[Scope, Instance] = {}
        by_id = self._by_name.get(name) or {}
        for pid, inst in list(by_id.items()):
            if now - inst.seen > STALE_AFTER:
                del by_id[pid]  # deleted in Kong (or idle): see the module docstring
                continue
            key = (inst.route_id, inst.service_id, inst.consumer_id)
            prev = combos.get(key)
            if prev is None or inst.seq > prev.seq:
                combos[key] = inst
        r, s, c = route_id, service_id, consumer_id
        order: list[Scope] = []
        if r and s and c:
            order.append((r, s, c))
        if r and c:
            order.append((r, None, c))
        if s and c:
            order.append((None, s, c))
        if r and s:
            order.append((r, s, None))
        if c:
            order.append((None, None, c))
        if r:
            order.append((r, None, None))
        if s:
            order.append((None, s, None))
        order.append((None, None, None))
        for key in order:
            if key in combos:
                return combos[key]
        return None

    def pipeline(self, names: list[str], route_id: str | None, service_id: str | None,
                 consumer_id: str | None) -> list[Instance]:
        """The instances of ``names`` that apply, in the pipeline's order."""
        found = [i for n in names if (i := self.pick(n, route_id, service_id, consumer_id)) is not None]
        return sorted(found, key=lambda i: -i.order)

    def scoped(self) -> set[str]:
        """Which Kong scopes the live instances use: a subset of {"route", "service"}."""
        now = self._clock()
        out: set[str] = set()
        for by_id in self._by_name.values():
            for inst in by_id.values():
                if now - inst.seen <= STALE_AFTER:
                    if inst.route_id:
                        out.add("route")
                    if inst.service_id:
                        out.add("service")
        return out

    def names(self) -> list[str]:
        return list(self._by_name)

    def clear(self) -> None:
        self._by_name.clear()


REGISTRY = Registry()
