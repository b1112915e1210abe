"""ai-cost: cost on every response and USD budgets reserved from the worst case."""
from __future__ import annotations

from typing import Any

from ..context import Outcome, RequestContext
from ..cost.pricing import PriceTable, usd_to_micros
from ..errors import GatewayError
from ..schema import ConfigInvalid
from .common import require_router
from .limits import Reserver, ScopedLimit, retry_after, rule_label, worst_case_tokens


MOVED_PRICES = ("price overrides moved to ai-router's config.prices (same entry format), so that "
                "cost routing and ai-cost's charges use one price table; move these entries there")


class CostRuntime:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        if cfg.get("prices"):
            raise ConfigInvalid("ai-cost", "prices", MOVED_PRICES)
        limits = [ScopedLimit(b["scope"], usd_to_micros(float(b["usd"])), b["period"],
                              frozenset(b.get("match") or ()))
                  for b in cfg.get("budgets") or ()]
        self.reserver = Reserver("usd", limits, cfg)
        self.needs_groups = self.reserver.needs_groups
        # cfg is schema-validated (plugin_base): its defaults are filled from schemas/ai-cost.json
        self.default_max_output = int(cfg["default_max_output"])

    def access(self, ctx: RequestContext) -> None:
        require_router(ctx, "ai-cost")
        if ctx.api in ("models", "count_tokens"):
            return  # counting tokens is free at the providers and here
        prices: PriceTable = ctx.router.prices  # the table the router ordered the plan by

        def price_of(usage, target) -> float | None:
            if target is None or usage is None:
                return None
            return prices.cost(target, usage)

        ctx.cost_fn = price_of
        ctx.cost_headers = bool(self.cfg["headers"])
        if ctx.cache_entry is not None or not self.reserver.limits:
            return  # hits cost nothing; unbudgeted routes only price
        prompt, max_out, per_choice = worst_case_tokens(ctx, self.default_max_output)
        worst = []
        for t in ctx.plan:
            w = prices.worst_case(t, prompt, max_out)
            if w is None and self.cfg["unpriced"] == "reject":
                raise GatewayError(402, f"The model '{ctx.model.name}' has no price on this gateway, and this "
                                        "route enforces spend budgets; ask the operator to price it.",
                                   code="model_not_priced")
            worst.append(w or 0.0)
        amount = usd_to_micros(max(worst) if worst else 0.0)

        def denied(decision) -> GatewayError:
            label = rule_label(decision.rule)          # scope:subject:period
            scope, period = label.split(":", 1)[0], label.rsplit(":", 1)[1]
            if amount > decision.rule.limit:
                # can never fit: a client error that SDKs do not retry (they retry 408/409/429/5xx)
                return GatewayError(400, f"This request may cost up to {amount / 1e6:.6f} USD, more than the "
                                         f"whole {period} budget of {decision.rule.limit / 1e6:.6f} USD for this "
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
