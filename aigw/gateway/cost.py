"""ai-cost: cost on every response and USD budgets reserved from the worst case."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..context import Outcome, RequestContext, Slice
from ..cost.pricing import PriceTable, usd_to_micros
from ..errors import GatewayError
from ..limits import Decision
from ..pipeline import Exchange, Stage
from ..schema import ConfigInvalid
from .common import require_router
from .limits import (
    Reserver,
    ScopedLimit,
    denying_rule,
    retry_after,
    rule_label,
    worst_case_tokens,
)

MOVED_PRICES = ("price overrides moved to ai-router's config.prices (same entry format), so that "
                "cost routing and ai-cost's charges use one price table; move these entries there")


@dataclass(slots=True)
class CostState(Slice):
    """ai-cost's part of a request: whether it prices this request's answer."""

    priced: bool = False
    cost: float | None = None     # the answer's price, once known
    known: bool = False
    prices: PriceTable | None = None  # the route's one price table (ai-router's, ctx.prices)


class CostStage(Stage):
    """Reserves USD budgets from the worst case; prices the answer (outcome, header, the
    stream's final usage chunk)."""

    name = "ai-cost"
    priority = 770

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        self.cfg = cfg = self.config  # schema-validated: defaults from schemas/ai-cost.json
        if cfg.get("prices"):
            raise ConfigInvalid("ai-cost", "prices", MOVED_PRICES)
        # cfg is schema-validated (plugin_base): its defaults are filled from schemas/ai-cost.json
        self.cost_headers = bool(cfg["headers"])
        limits = [ScopedLimit(b["scope"], usd_to_micros(float(b["usd"])), b["period"],
                              frozenset(b.get("match") or ()))
                  for b in cfg.get("budgets") or ()]
        self.reserver = Reserver("usd", limits, cfg)
        self.needs_groups = self.reserver.needs_groups
        # cfg is schema-validated (plugin_base): its defaults are filled from schemas/ai-cost.json
        self.default_max_output = int(cfg["default_max_output"])

    def request(self, ctx: RequestContext) -> None:
        require_router(ctx, "ai-cost")
        if ctx.api in ("models", "count_tokens"):
            return  # counting tokens is free at the providers and here
        prices = ctx.prices  # the table the router ordered the plan by
        st = ctx.slot(CostState)
        st.priced, st.prices = True, prices

        def price_of(usage: Any, target: Any) -> float | None:
            return _price(prices, usage, target)

        if ctx.answered or not self.reserver.limits:
            return  # hits cost nothing; unbudgeted routes only price
        if prices is None:  # ai-router sets it with the plan, before it provides its terminal
            raise GatewayError(500, "ai-cost found no price table of ai-router's for this request.",
                               code="gateway_misconfigured")
        prompt, max_out, per_choice = worst_case_tokens(ctx, self.default_max_output)
        worst = []
        for t in ctx.plan:
            w = prices.worst_case(t, prompt, max_out)
            if w is None and self.cfg["unpriced"] == "reject":
                name = ctx.model.name if ctx.model is not None else t.model
                raise GatewayError(402, f"The model '{name}' has no price on this gateway, and this "
                                        "route enforces spend budgets; ask the operator to price it.",
                                   code="model_not_priced")
            worst.append(w or 0.0)
        amount = usd_to_micros(max(worst) if worst else 0.0)

        def denied(decision: Decision) -> GatewayError:
            rule = denying_rule(decision)
            label = rule_label(rule)          # scope:subject:period
            scope, period = label.split(":", 1)[0], label.rsplit(":", 1)[1]
            if amount > rule.limit:
                # can never fit: a client error that SDKs do not retry (they retry 408/409/429/5xx)
                return GatewayError(400, f"This request may cost up to {amount / 1e6:.6f} USD, more than the "
                                         f"whole {period} budget of {rule.limit / 1e6:.6f} USD for this "
                                         f"{scope}; lower max_tokens, n or the prompt.",
                                    code="budget_exceeds_limit", param="max_tokens")
            return GatewayError(429, "Spend budget exhausted for this "
                                     f"{scope} (period {period}).",
                                code="budget_exceeded", type_="insufficient_quota",
                                headers={"Retry-After": retry_after(decision)})

        def actual(o: Outcome) -> int | None:
            if not o.reached_provider:
                return None  # never reached a provider (denied later, or failed to connect)
            if o.cost_usd is not None:
                return usd_to_micros(o.cost_usd)
            if o.usage is not None and o.target is not None:
                c = price_of(o.usage, o.target)
                return usd_to_micros(c) if c is not None else amount
            return None

        self.reserver.reserve(ctx, amount, denied, actual, per_choice)

    # ------------------------------------------------------------ response side
    def _cost(self, ctx: RequestContext, ex: Exchange) -> float | None:
        st = ctx.slots.get(CostState)
        if not isinstance(st, CostState) or not st.priced or ex.usage is None:
            return None
        if not st.known or ex.stream:  # a stream's usage grows until it ends
            st.cost = 0.0 if ex.replayed else _price(st.prices, ex.usage, ex.target)  # replays cost nothing
            st.known = True
        return st.cost

    def response(self, ctx: RequestContext, ex: Exchange) -> None:
        cost = self._cost(ctx, ex)
        if cost is None:
            return
        ex.outcome.cost_usd = cost
        if self.cost_headers:
            ex.trailer["cost"] = cost
            ex.usage_fields["cost"] = cost

    def headers(self, ctx: RequestContext, ex: Exchange, headers: list[tuple[str, str]]) -> None:
        if not self.cost_headers:
            return
        cost = self._cost(ctx, ex)
        if cost is not None:
            headers.append(("X-AI-Cost-USD", f"{cost:.8f}".rstrip("0").rstrip(".") if cost else "0"))


def _price(prices: PriceTable | None, usage: Any, target: Any) -> float | None:
    if prices is None or target is None or usage is None:
        return None
    return prices.cost(target, usage)


CostRuntime = CostStage  # the name aigw.validate builds instances by
