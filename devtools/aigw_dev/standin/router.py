"""Route matching and target balancing.

Matching follows Kong 3.x's ``traditional_compatible`` router: every (route, path) pair gets the
priority kong/router/transform.lua ``get_priority`` computes (match weight = number of fields set,
plain-hosts-only bit, regex bit, regex_priority, prefix length) and the highest priority matching
pair wins. Regex paths start with ``~`` and are anchored at the start of the path. ``strip_path``
removes the matched part; the upstream path is joined as path_handling "v0" does
(kong/router/utils.lua). Balancing is weighted round-robin (kong/runloop/balancer/round_robin.lua)
with a minimal passive health check.
"""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from math import gcd

from .config import Config, Route, Service, Target, Upstream, pcre_to_python


@dataclass
class Match:
    route: Route
    matched_path: str  # the part of the request path the route's path matched
    captures: dict


@dataclass
class _Entry:
    route: Route
    path: str | None
    regex: re.Pattern | None
    priority: tuple


def _priority(route: Route, path: str | None) -> tuple:
    weight = sum(bool(x) for x in (route.methods, route.hosts, path))
    plain_hosts = bool(route.hosts) and not any("*" in h for h in route.hosts)
    is_regex = bool(path and path.startswith("~"))
    return (weight, plain_hosts, is_regex, route.regex_priority if is_regex else 0,
            0 if is_regex or not path else len(path))


class Router:
    def __init__(self, config: Config):
        entries: list[_Entry] = []
        for route in config.routes:
            for path in route.paths or [None]:
                rx = re.compile(pcre_to_python(path[1:])) if path and path.startswith("~") else None
                entries.append(_Entry(route, path, rx, _priority(route, path)))
        # stable sort: equal priorities keep config order
        self.entries = sorted(entries, key=lambda e: e.priority, reverse=True)

    def match(self, method: str, host: str, path: str) -> Match | None:
        host = host.lower()
        bare_host = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        for e in self.entries:
            r = e.route
            if r.methods and method.upper() not in r.methods:
                continue
            if r.hosts and not any(_host_match(h, host, bare_host) for h in r.hosts):
                continue
            if e.path is None:
                return Match(r, "", {})
            if e.regex is not None:
                m = e.regex.match(path)
                if m:
                    caps = {str(i + 1): g for i, g in enumerate(m.groups())}
                    caps.update(m.groupdict())
                    return Match(r, m.group(0), caps)
            elif path.startswith(e.path):
                return Match(r, e.path, {})
        return None


def _host_match(pattern: str, host: str, bare: str) -> bool:
    target = host if ":" in pattern else bare
    if pattern.startswith("*."):
        return target.endswith(pattern[1:])
    if pattern.endswith(".*"):
        return target.startswith(pattern[:-1])
    return pattern == target


def upstream_path(service: Service | None, match: Match, path: str, strip: bool) -> str:
    """path_handling v0: service.path joined with the (optionally stripped) request path."""
    rest = path
    if strip and match.matched_path:
        rest = path[len(match.matched_path):]
    base = (service.path if service and service.path else None) or "/"
    if rest == "":
        return base
    if not rest.startswith("/"):
        rest = "/" + rest if base == "/" else rest
    if base == "/":
        return rest
    if base.endswith("/") and rest.startswith("/"):
        return base + rest[1:]
    return base + rest


class NoPeer(Exception):
    """No healthy target: Kong answers 503 "failure to get a peer from the ring-balancer"."""


class Balancer:
    """Weighted round-robin over an upstream's targets; a target that refused a connection is
    skipped for ``cooldown`` seconds (a minimal passive health check)."""

    def __init__(self, upstream: Upstream, cooldown: float = 10.0):
        self.upstream = upstream
        self.cooldown = cooldown
        wheel = [t for t in upstream.targets for _ in range(max(0, t.weight) // _gcd(upstream.targets) or 0)]
        self._wheel = wheel
        self._cycle = itertools.cycle(range(len(wheel))) if wheel else None
        self._down: dict[tuple[str, int], float] = {}

    def pick(self, exclude: set[tuple[str, int]] = frozenset()) -> Target:
        if not self._cycle:
            raise NoPeer()
        now = time.monotonic()
        for _ in range(len(self._wheel)):
            t = self._wheel[next(self._cycle)]
            key = (t.host, t.port)
            if key in exclude or self._down.get(key, 0) > now:
                continue
            return t
        raise NoPeer()

    def report_failure(self, t: Target) -> None:
        self._down[(t.host, t.port)] = time.monotonic() + self.cooldown


def _gcd(targets: list[Target]) -> int:
    g = 0
    for t in targets:
        if t.weight > 0:
            g = gcd(g, t.weight)
    return g or 1
