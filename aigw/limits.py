"""Sliding-window limits for tokens and spend: reserve before a call, reconcile after it.

One mechanism serves token limits (amounts in tokens) and budgets (amounts in
micro-USD). A request *reserves* its estimated amount against every rule at
once (all-or-nothing); when the real amount is known it is *reconciled*
(keeping the original timestamp) or *released* if the upstream call failed.

The unit of work is a *batch*: several reservations (a request's token limits and
its budgets, each an ``Item`` with its own id and amount) are reserved together, all
or none (``reserve_many``), and settled together (``settle_many``).
``RedisLimiter`` does each batch in one Lua script call with Redis server time, so all
gateway nodes share exact, atomic counters; ``MemoryLimiter`` is the single-node
equivalent. See docs/tokens-core.md and docs/redis.md.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import redis

from aigw.redis_conn import RedisSettings, connect, key_prefix

__all__ = [
    "BackendUnavailable", "Decision", "Item", "LimitExceeded", "Limiter", "MemoryLimiter",
    "RedisLimiter", "Reservation", "Rule", "make_limiter",
]


@dataclass(frozen=True)
class Rule:
    key: str  # e.g. "tokens:consumer:alice:minute"; one key = one counter
    limit: int
    window: int  # seconds


@dataclass
class Decision:
    """For an allowed request: the tightest rule's numbers; for a denied one: the denying rule's."""

    allowed: bool
    rule: Rule | None
    limit: int
    remaining: int
    reset_after: float  # seconds until the window holds none of the current entries
    retry_after: float  # seconds until this amount would fit (0 when allowed)


@dataclass
class Reservation:
    id: str
    rules: tuple[Rule, ...]
    amount: int


@dataclass(frozen=True)
class Item:
    """One reservation of a batch: ``amount`` against every rule, under ``id``."""

    rules: tuple[Rule, ...]
    amount: int
    id: str


class LimitExceeded(Exception):
    """A batch was refused (nothing of it reserved): ``index`` is the first denied item."""

    def __init__(self, decision: Decision, index: int = 0):
        key = decision.rule.key if decision.rule else "?"
        super().__init__(f"limit exceeded: {key}")
        self.decision = decision
        self.index = index


class BackendUnavailable(Exception):
    """The shared counter store could not be reached; the caller picks fail-open or closed."""


class Limiter(Protocol):
    def reserve_many(self, items: Sequence[Item]) -> list[tuple[Reservation, Decision]]: ...
    def settle_many(self, settlements: Sequence[tuple[Reservation, int | None]]) -> None: ...
    def reserve(self, rules: Sequence[Rule], amount: int,
                reservation_id: str) -> tuple[Reservation, Decision]: ...
    def reconcile(self, reservation: Reservation, actual: int) -> None: ...
    def release(self, reservation: Reservation) -> None: ...
    def used(self, rule: Rule) -> int: ...


class _Single:
    """The one-reservation operations, as batches of one."""

    def reserve_many(self, items: Sequence[Item]) -> list[tuple[Reservation, Decision]]:
        raise NotImplementedError

    def settle_many(self, settlements: Sequence[tuple[Reservation, int | None]]) -> None:
        raise NotImplementedError

    def reserve(self, rules: Sequence[Rule], amount: int,
                reservation_id: str) -> tuple[Reservation, Decision]:
        return self.reserve_many([Item(tuple(rules), amount, reservation_id)])[0]

    def reconcile(self, reservation: Reservation, actual: int) -> None:
        self.settle_many([(reservation, actual)])

    def release(self, reservation: Reservation) -> None:
        self.settle_many([(reservation, None)])


def _check_settlements(settlements: Sequence[tuple[Reservation, int | None]]) -> None:
    for _, actual in settlements:
        if actual is not None and actual < 0:
            raise ValueError("actual must be >= 0")


def _check_rules(rules: Sequence[Rule], amount: int) -> tuple[Rule, ...]:
    if amount < 0:
        raise ValueError("amount must be >= 0")
    keys = [r.key for r in rules]
    if len(set(keys)) != len(keys):
        raise ValueError("rules must have distinct keys")
    for r in rules:
        if r.window <= 0 or r.limit < 0:
            raise ValueError(f"invalid rule {r.key}: window must be > 0 and limit >= 0")
    return tuple(rules)


def _tightest(rules: tuple[Rule, ...], remaining: list[int], resets: list[float]) -> Decision:
    if not rules:
        return Decision(True, None, 0, 0, 0.0, 0.0)
    i = min(range(len(rules)),
            key=lambda j: (remaining[j], remaining[j] / rules[j].limit if rules[j].limit else 0))
    return Decision(True, rules[i], rules[i].limit, remaining[i], resets[i], 0.0)


# --- single node -----------------------------------------------------------

@dataclass(slots=True)
class _Entry:
    ts: float  # reserve time (the limiter's clock)
    amount: int  # reconciled in place


@dataclass
class _Log:
    window: float
    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)  # id -> entry
    total: int = 0

    def purge(self, now: float) -> None:
        cutoff = now - self.window
        while self.entries:
            rid, entry = next(iter(self.entries.items()))
            if entry.ts > cutoff:
                break
            del self.entries[rid]
            self.total -= entry.amount

    def reset_after(self, now: float) -> float:
        if not self.entries:
            return 0.0
        newest = next(reversed(self.entries.values())).ts
        # clamped: (t + window) - t can round to a hair above window
        return min(max(newest + self.window - now, 0.0), self.window)

    def wait_for(self, now: float, need: int) -> float:
        freed = 0
        for entry in self.entries.values():
            freed += entry.amount
            if freed >= need:
                return min(max(entry.ts + self.window - now, 0.001), self.window)
        return self.window


class MemoryLimiter(_Single):
    """Exact sliding log in process memory (one node). Thread- and greenlet-safe."""

    SWEEP_EVERY = 1000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._logs: dict[str, _Log] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def _log(self, rule: Rule, now: float) -> _Log:
        log = self._logs.get(rule.key)
        if log is None:
            log = self._logs[rule.key] = _Log(float(rule.window))
        log.window = float(rule.window)
        log.purge(now)
        return log

    def _sweep(self, now: float) -> None:
        for key, log in list(self._logs.items()):
            log.purge(now)
            if not log.entries:
                del self._logs[key]

    def reserve_many(self, items: Sequence[Item]) -> list[tuple[Reservation, Decision]]:
        checked = [(_check_rules(it.rules, it.amount), it) for it in items]
        with self._lock:
            now = self._clock()
            self._calls += 1
            if self._calls % self.SWEEP_EVERY == 0:
                self._sweep(now)
            pending: dict[str, int] = {}  # what earlier items of this batch add to a counter
            all_logs = []
            for n, (rules_t, it) in enumerate(checked):
                logs = [self._log(r, now) for r in rules_t]
                deny: Decision | None = None  # of the denying rules, the one that frees up last
                for r, log in zip(rules_t, logs, strict=True):
                    total = log.total + pending.get(r.key, 0)
                    if it.id in log.entries or total + it.amount <= r.limit:
                        continue
                    retry = float(r.window) if it.amount > r.limit else log.wait_for(
                        now, total + it.amount - r.limit)
                    if deny is None or retry > deny.retry_after:
                        deny = Decision(False, r, r.limit, max(r.limit - total, 0),
                                        log.reset_after(now), retry)
                if deny is not None:
                    raise LimitExceeded(deny, n)  # nothing written: the whole batch is refused
                for r, log in zip(rules_t, logs, strict=True):
                    if it.id not in log.entries:
                        pending[r.key] = pending.get(r.key, 0) + it.amount
                all_logs.append(logs)
            out = []
            for (rules_t, it), logs in zip(checked, all_logs, strict=True):
                for log in logs:
                    if it.id not in log.entries:
                        log.entries[it.id] = _Entry(now, it.amount)
                        log.total += it.amount
                remaining = [max(r.limit - log.total, 0) for r, log in zip(rules_t, logs, strict=True)]
                resets = [log.reset_after(now) for log in logs]
                out.append((Reservation(it.id, rules_t, it.amount),
                            _tightest(rules_t, remaining, resets)))
        return out

    def settle_many(self, settlements: Sequence[tuple[Reservation, int | None]]) -> None:
        _check_settlements(settlements)
        with self._lock:
            now = self._clock()
            for reservation, actual in settlements:
                for r in reservation.rules:
                    log = self._logs.get(r.key)
                    if log is None:
                        continue
                    if actual is None:
                        entry = log.entries.pop(reservation.id, None)
                        if entry is not None:
                            log.total -= entry.amount
                        continue
                    log.purge(now)
                    entry = log.entries.get(reservation.id)
                    if entry is not None:
                        log.total += actual - entry.amount
                        entry.amount = actual

    def used(self, rule: Rule) -> int:
        with self._lock:
            log = self._logs.get(rule.key)
            if log is None:
                return 0
            log.purge(self._clock())
            return log.total


# --- shared across nodes ---------------------------------------------------

_LUA = (resources.files("aigw") / "data" / "limiter.lua").read_text(encoding="utf-8")


class RedisLimiter(_Single):
    """Exact sliding log in Redis: one Lua script call per batch (EVALSHA, NOSCRIPT reload).

    Keys per rule: ``{prefix}{key}:log`` (sorted set id→ms), ``:amt`` (hash id→amount),
    ``:total`` (running sum); all expire one window after the last reservation. In a
    Redis Cluster the prefix is a hash tag (``aigw/redis_conn.py`` ``key_prefix``), so every
    key of a batch is in one slot and a batch is one call there too.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "aigw:",
                 timeout: float = 0.5, *, client: redis.Redis | None = None,
                 settings: RedisSettings | None = None):
        self._redis = client or connect(settings or RedisSettings(url=url, timeout=timeout))
        self.prefix = key_prefix(prefix, self._redis)  # a hash tag in Redis Cluster
        self._script = self._redis.register_script(_LUA)  # EVALSHA; loads on NOSCRIPT

    def _keys(self, rules: tuple[Rule, ...], keys: list[str]) -> None:
        for r in rules:
            base = f"{self.prefix}{r.key}"
            keys += [f"{base}:log", f"{base}:amt", f"{base}:total"]

    def _run(self, keys: list[str], args: list[str | int]) -> Any:
        # the script's reply, as Redis sends it: an integer, or a list of integers (by op)
        try:
            return self._script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise BackendUnavailable(f"limit store unavailable: {type(exc).__name__}") from exc

    def reserve_many(self, items: Sequence[Item]) -> list[tuple[Reservation, Decision]]:
        checked = [(_check_rules(it.rules, it.amount), it) for it in items]
        live = [(n, rules_t, it) for n, (rules_t, it) in enumerate(checked) if rules_t]
        keys: list[str] = []
        args: list[str | int] = ["reserve", len(live)]
        for _, rules_t, it in live:
            self._keys(rules_t, keys)
            args += [it.id, it.amount, len(rules_t)]
            for r in rules_t:
                args += [r.limit, r.window * 1000]
        out: list[int] = self._run(keys, args) if live else [1]
        if out[0] == 0:
            _, n, idx, remaining, retry_ms, reset_ms = out
            index, rules_t, _ = live[n - 1]
            r = rules_t[idx - 1]
            raise LimitExceeded(Decision(False, r, r.limit, int(remaining), reset_ms / 1000,
                                         retry_ms / 1000), index=index)
        pos = 1
        result = []
        for rules_t, it in checked:
            vals = out[pos:pos + 2 * len(rules_t)]
            pos += 2 * len(rules_t)
            result.append((Reservation(it.id, rules_t, it.amount),
                           _tightest(rules_t, [int(v) for v in vals[0::2]],
                                     [v / 1000 for v in vals[1::2]])))
        return result

    def settle_many(self, settlements: Sequence[tuple[Reservation, int | None]]) -> None:
        _check_settlements(settlements)
        live = [(res, actual) for res, actual in settlements if res.rules]
        if not live:
            return
        keys: list[str] = []
        args: list[str | int] = ["settle", len(live)]
        for res, actual in live:
            self._keys(res.rules, keys)
            args += [res.id, -1 if actual is None else actual, len(res.rules)]
        self._run(keys, args)

    def used(self, rule: Rule) -> int:
        keys: list[str] = []
        self._keys((rule,), keys)
        return int(self._run(keys, ["used", rule.window * 1000]))


_limiters: dict[tuple[str, tuple[object, ...] | str | None, str | None], Limiter] = {}
_limiters_lock = threading.Lock()


def make_limiter(policy: str, redis_url: str | None = None, *, prefix: str = "aigw:",
                 timeout: float = 0.5, settings: RedisSettings | None = None) -> Limiter:
    """Shared limiter per (policy, Redis settings, prefix): ``"local"`` (memory) or ``"redis"``."""
    if policy not in ("local", "redis"):
        raise ValueError(f"unknown limit policy {policy!r}")
    key = (policy, (settings.key() if settings else redis_url) if policy == "redis" else None,
           prefix if policy == "redis" else None)
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            if policy == "local":
                limiter = MemoryLimiter()
            else:
                limiter = RedisLimiter(redis_url or "redis://127.0.0.1:6379/0", prefix, timeout,
                                       settings=settings)
            _limiters[key] = limiter
    return limiter
