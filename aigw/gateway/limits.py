"""Reserve-before / reconcile-after, shared by ai-tokens (tokens) and ai-cost (micro-USD).

Both plugins describe their limits as scoped rules; this module turns them
into ``aigw.limits.Rule`` keys for the request, reserves the worst case
atomically (one Redis Lua script on every node, or in memory for one node),
and registers the finish hook that reconciles to the actual amount or
releases the reservation when the call failed.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from ..context import Outcome, RequestContext
from ..errors import GatewayError
from ..limits import BackendUnavailable, LimitExceeded, Rule, make_limiter
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


class Reserver:
    def __init__(self, kind: str, limits: list[ScopedLimit], cfg: dict[str, Any]):
        self.kind = kind  # "tok" | "usd"
        self.limits = limits
        self.fail_open = bool(cfg.get("fail_open", False))
        self.limiter = make_limiter(cfg.get("policy", "local"), cfg.get("redis_url"),
                                    prefix=redis_prefix(),
                                    timeout=cfg.get("redis_timeout_ms", 500) / 1000.0,
                                    settings=RedisSettings.from_config(cfg, 500)) if limits else None
        self.needs_groups = any(l.scope == "group" for l in limits)

    def rules(self, ctx: RequestContext) -> list[Rule]:
        out = []
        for lim in self.limits:
            for key in lim.keys(ctx):
                out.append(Rule(key=f"{self.kind}:{key}:{lim.window}", limit=lim.amount,
                                window=WINDOWS[lim.window]))
        return out

    def reserve(self, ctx: RequestContext, amount: int, denied: Callable[[Any], GatewayError],
                actual: Callable[[Outcome], int | None]):
        """Reserve ``amount``; on finish reconcile to ``actual(outcome)`` (None → release)."""
        rules = self.rules(ctx)
        if not rules or self.limiter is None:
            return None
        try:
            reservation, decision = self.limiter.reserve(rules, amount, f"{ctx.id}:{self.kind}")
        except LimitExceeded as exc:
            raise denied(exc.decision)
        except BackendUnavailable:
            if self.fail_open:
                log.warning("aigw %s limit store unavailable: failing open", self.kind)
                return None
            raise GatewayError(503, "The gateway's limit store is unavailable; the request was not sent.",
                               code="limits_unavailable")
        limiter = self.limiter

        def settle(outcome: Outcome) -> None:
            value = actual(outcome)
            try:
                if value is None:
                    limiter.release(reservation)
                else:
                    limiter.reconcile(reservation, value)
            except BackendUnavailable:
                log.error("aigw %s limit store unavailable while settling", self.kind)

        ctx.on_finish(settle)
        return decision


def worst_case_tokens(ctx: RequestContext, default_max_output: int) -> tuple[int, int]:
    """(prompt tokens, output tokens to reserve): the router's count and the request's
    max output, or the configured default when the request sets none."""
    prompt = ctx.prompt_count.tokens if ctx.prompt_count is not None else 0
    max_out = 0 if ctx.api == "embeddings" else (ctx.max_output or default_max_output)
    return prompt, max_out


def ratelimit_headers(decision, unit: str = "tokens") -> dict[str, str]:
    """OpenAI-style rate-limit headers for the tightest (or denying) rule."""
    return {
        f"x-ratelimit-limit-{unit}": str(decision.limit),
        f"x-ratelimit-remaining-{unit}": str(max(0, decision.remaining)),
        f"x-ratelimit-reset-{unit}": f"{max(0.0, decision.reset_after):.0f}s",
    }


def retry_after(decision) -> str:
    return str(max(1, math.ceil(decision.retry_after)))
