"""Reserve-before / reconcile-after, shared by ai-tokens (tokens) and ai-cost (micro-USD).

Both plugins describe their limits as scoped rules; this module turns them
into ``aigw.limits.Rule`` keys for the request and queues the worst case in the
request's reservation *batch* (``Reserver.reserve``). Nothing reaches the store in
the access phase: the relay calls :func:`commit` when it takes the request, before
any provider call, and the batch reserves every queued item at once, all or none
(one Redis script call per backend; in memory for ``policy: local``). The one
finish hook of the batch then reconciles each item to its actual amount, or
releases it when the call failed, again in one call per backend. A request that
never reaches the relay (denied by a later plugin, a cache hit, a client gone) has
reserved nothing and has nothing to release. See docs/redis.md.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import schema
from ..context import Outcome, RequestContext
from ..errors import GatewayError
from ..limits import (
    BackendUnavailable,
    Decision,
    Item,
    Limiter,
    LimitExceeded,
    Reservation,
    Rule,
    make_limiter,
)
from ..redis_conn import RedisSettings

log = logging.getLogger("aigw")

def redis_prefix() -> str:
    """Key namespace in Redis (``AIGW_REDIS_PREFIX``, default ``aigw:``): gateways that
    share limits must share it; separate environments on one Redis must not."""
    return os.environ.get("AIGW_REDIS_PREFIX", "aigw:")


WINDOWS = {"minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400}


@dataclass(frozen=True)
class ScopedLimit:
    scope: str            # consumer | group | model | consumer_model | global
    amount: int           # limit in the unit of the owner (tokens or micro-USD)
    window: str
    match: frozenset[str]  # empty = applies to every subject

    def keys(self, ctx: RequestContext) -> list[str]:
        consumer = ctx.consumer_name or "anonymous"
        model = ctx.model.name if ctx.model is not None else "-"
        if self.scope == "consumer":
            subjects = [consumer]
        elif self.scope == "group":
            subjects = list(ctx.groups or [])
        elif self.scope == "model":
            subjects = [model]
        elif self.scope == "consumer_model":
            subjects = [f"{consumer}|{model}"]
        else:
            subjects = ["*"]
        if self.match:
            subjects = [s for s in subjects if s in self.match or s.split("|")[0] in self.match]
        return [f"{self.scope}:{s}" for s in subjects]


_COUNTER_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def counter_id(cfg: dict[str, Any], kind: str) -> str:
    """Which counters a plugin instance uses: its own by default, a named one on purpose.

    ``counter: <name>`` in the config gives ``n.<name>``: every instance (route, service,
    node) naming the same counter shares it. Otherwise the instance's own id: Kong's plugin
    id (``__plugin_id``: the same on every node, stable across config reloads) as
    ``i.<id>``, or, when the config carries none, a digest of where the plugin is attached
    (route/service/consumer ids) and its limits, as ``d.<sha256[:16]>``.
    """
    named = cfg.get("counter")
    if isinstance(named, str) and named:
        return "n." + _COUNTER_SAFE.sub("_", named)
    pid = cfg.get("__plugin_id")
    if isinstance(pid, str) and pid:
        return "i." + _COUNTER_SAFE.sub("_", pid)
    where = [str(cfg.get(k) or "") for k in ("route_id", "service_id", "consumer_id")]
    rules = cfg.get("limits" if kind == "tok" else "budgets") or []
    digest = hashlib.sha256(repr((kind, where, rules)).encode()).hexdigest()[:16]
    return "d." + digest


_OWNER = {"tok": "ai-tokens", "usd": "ai-cost"}  # the plugin whose config a reserver reads


class Reserver:
    def __init__(self, kind: str, limits: list[ScopedLimit], cfg: dict[str, Any]):
        self.kind = kind  # "tok" | "usd"
        self.limits = limits
        self.counter = counter_id(cfg, kind)
        # the owning plugin's config, its defaults filled from its JSON Schema (a stage's is
        # validated already; validating again changes nothing)
        cfg = schema.validate(_OWNER[kind], cfg)
        self.fail_open = bool(cfg["fail_open"])
        self.limiter = make_limiter(cfg["policy"], cfg.get("redis_url"),
                                    prefix=redis_prefix(),
                                    timeout=cfg["redis_timeout_ms"] / 1000.0,
                                    settings=RedisSettings.from_config(cfg, 500)) if limits else None
        self.needs_groups = any(lim.scope == "group" for lim in limits)

    def rules(self, ctx: RequestContext) -> list[Rule]:
        out = []
        for lim in self.limits:
            for key in lim.keys(ctx):
                out.append(Rule(key=f"{self.kind}:{self.counter}:{key}:{lim.window}", limit=lim.amount,
                                window=WINDOWS[lim.window]))
        return out

    def reserve(self, ctx: RequestContext, amount: int, denied: Callable[[Decision], GatewayError],
                actual: Callable[[Outcome], int | None], per_choice: int = 0,
                decided: Callable[[Decision], None] | None = None) -> None:
        """Queue ``amount`` in the request's batch; :func:`commit` reserves it, and on
        finish it is reconciled to ``actual(outcome)`` (None → released).

        ``denied(decision)`` is the error the commit raises when this item is refused;
        ``decided(decision)`` receives the tightest rule's numbers once it is reserved.

        ``per_choice``: the output reserved per choice; when a limit applies, the request is
        capped there (``ctx.output_cap``, the smallest of the plugins' caps): the relay sends
        it upstream as the max output when the client set none and stops relaying a choice
        that reaches it (aigw/relay/output_cap.py). Unlimited requests are not capped."""
        rules = self.rules(ctx)
        if not rules or self.limiter is None:
            return
        if per_choice > 0 and (ctx.output_cap is None or per_choice < ctx.output_cap):
            ctx.output_cap = per_choice
        batch = ctx.limits
        if batch is None:
            batch = ctx.limits = Batch()
            ctx.on_finish(batch.settle)
        batch.add(_Queued(self, self.limiter, Item(tuple(rules), amount, batch.new_id(f"{ctx.id}:{self.kind}")),
                          denied, actual, decided))


@dataclass
class _Queued:
    reserver: Reserver
    limiter: Limiter                  # the reserver's backend (a reserver without one queues nothing)
    item: Item
    denied: Callable[[Decision], GatewayError]
    actual: Callable[[Outcome], int | None]
    decided: Callable[[Decision], None] | None
    reservation: Reservation | None = None
    decision: Any = None


@dataclass
class Batch:
    """A request's reservations: queued in access, reserved by :func:`commit`, settled on finish.

    Items on one backend (the same limiter: ``policy``, Redis settings and prefix) are
    reserved in one call, atomically; items on different backends cannot share a script,
    so each backend is one call, in the order of its first item. When a later backend
    refuses, the backends already reserved are released (one more call each, only then).
    """

    queued: list[_Queued] = field(default_factory=list)
    state: str = "queued"          # queued -> committed | refused; settled after finish

    def new_id(self, base: str) -> str:
        """A reservation id unique in the batch (one per plugin instance, as a rule)."""
        taken = {q.item.id for q in self.queued}
        rid, n = base, 1
        while rid in taken:
            n += 1
            rid = f"{base}:{n}"
        return rid

    def add(self, q: _Queued) -> None:
        if self.state != "queued":
            raise RuntimeError("a reservation was queued after the batch was committed")
        self.queued.append(q)

    def groups(self, only_reserved: bool = False) -> list[tuple[Limiter, list[_Queued]]]:
        out: dict[int, tuple[Limiter, list[_Queued]]] = {}
        for q in self.queued:
            if only_reserved and q.reservation is None:
                continue
            lim = q.limiter
            out.setdefault(id(lim), (lim, []))[1].append(q)
        return list(out.values())

    def commit(self) -> None:
        if self.state != "queued":
            return
        self.state = "refused"  # until every backend said yes
        done: list[tuple[Limiter, list[_Queued]]] = []
        try:
            for lim, qs in self.groups():
                try:
                    results = lim.reserve_many([q.item for q in qs])
                except LimitExceeded as exc:
                    raise qs[exc.index].denied(exc.decision) from None
                except BackendUnavailable:
                    strict = [q for q in qs if not q.reserver.fail_open]
                    if strict:
                        raise GatewayError(503, "The gateway's limit store is unavailable; the request "
                                                "was not sent.", code="limits_unavailable") from None
                    for q in qs:
                        log.warning("aigw %s limit store unavailable: failing open", q.reserver.kind)
                    continue
                for q, (reservation, decision) in zip(qs, results, strict=True):
                    q.reservation, q.decision = reservation, decision
                done.append((lim, qs))
        except Exception:  # a refusal, or anything unexpected: hold nothing
            for lim, qs in done:
                _settle(lim, [(q, None) for q in qs])
                for q in qs:
                    q.reservation = None
            raise
        self.state = "committed"
        for q in self.queued:
            if q.reservation is not None and q.decided is not None:
                q.decided(q.decision)

    def settle(self, outcome: Outcome) -> None:
        """The finish hook: reconcile or release every reserved item, one call per backend."""
        if self.state != "committed":
            return  # never committed (the request did not reach the relay) or refused: nothing held
        self.state = "settled"
        for lim, qs in self.groups(only_reserved=True):
            values = []
            for q in qs:
                try:
                    values.append((q, q.actual(outcome)))
                except Exception as exc:  # keeps its worst case: never undercount
                    log.error("aigw %s settlement failed: %s", q.reserver.kind, type(exc).__name__)
            _settle(lim, values)


def _settle(limiter: Limiter, items: list[tuple[_Queued, int | None]]) -> None:
    if not items:
        return
    try:
        limiter.settle_many([(q.reservation, value) for q, value in items if q.reservation])
    except BackendUnavailable:
        log.error("aigw %s limit store unavailable while settling",
                  "+".join(sorted({q.reserver.kind for q, _ in items})))


def commit(ctx: RequestContext) -> None:
    """Reserve everything the request's plugins queued: one store call per backend.

    Called by the relay when it takes the request, before any provider call. Raises the
    first refused item's ``GatewayError`` (429/400/...), or 503 ``limits_unavailable``
    when a store is down and its plugin does not fail open; nothing stays reserved then.
    Calling it again, or for a request that queued nothing, does nothing."""
    batch = ctx.limits
    if batch is not None:
        batch.commit()


def output_choices(body: Any) -> int:
    """How many completions one request makes the provider generate (and bill): ``n``,
    or ``best_of`` where an OpenAI-compatible server honours it (it generates best_of
    and returns n). Anthropic has no such field (n > 1 is refused); Gemini's
    ``candidateCount`` is translated from ``n``."""
    if not isinstance(body, dict):
        return 1
    out = 1
    for key in ("n", "best_of"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > out:
            out = v
    return out


def output_per_choice(ctx: RequestContext, default_max_output: int) -> int:
    """Output tokens one choice may produce: the request's max_completion_tokens/max_tokens,
    else the model's ``max_output`` and ``default_max_output`` (the smaller when both)."""
    if ctx.max_output:
        return ctx.max_output
    spec_max = getattr(ctx.model, "max_output", None) if ctx.model is not None else None
    options = [v for v in (spec_max, default_max_output) if v]
    return min(options) if options else 0


def worst_case_tokens(ctx: RequestContext, default_max_output: int) -> tuple[int, int, int]:
    """(prompt tokens, output tokens to reserve, output per choice): the router's count, and
    the output per choice times the choices the request asks for (``n``/``best_of``)."""
    prompt = ctx.prompt_count.tokens if ctx.prompt_count is not None else 0
    if ctx.api == "embeddings":
        return prompt, 0, 0
    per_choice = output_per_choice(ctx, default_max_output)
    return prompt, per_choice * output_choices(ctx.canonical), per_choice


def denying_rule(decision: Decision) -> Rule:
    """The rule a refusal names: every denied decision of aigw.limits carries one (only an
    allowed decision with no rule to report has none)."""
    if decision.rule is None:
        raise RuntimeError("a limit refusal without its rule")
    return decision.rule


def rule_label(rule: Rule) -> str:
    """``scope:subject:window`` of a rule key (``<kind>:<counter>:<scope>:<subject>:<window>``)."""
    return rule.key.split(":", 2)[-1]


def ratelimit_headers(decision: Decision, unit: str = "tokens") -> dict[str, str]:
    """OpenAI-style rate-limit headers for the tightest (or denying) rule."""
    return {
        f"x-ratelimit-limit-{unit}": str(decision.limit),
        f"x-ratelimit-remaining-{unit}": str(max(0, decision.remaining)),
        f"x-ratelimit-reset-{unit}": f"{max(0.0, decision.reset_after):.0f}s",
    }


def retry_after(decision: Decision) -> str:
    return str(max(1, math.ceil(decision.retry_after)))
