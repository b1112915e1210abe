"""ai-tokens: token limits reserved before the call, reconciled to provider usage after it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..context import Outcome, RequestContext, Slice
from ..errors import GatewayError
from ..limits import Decision
from ..pipeline import Exchange, Stage
from .common import require_router
from .limits import (
    Reserver,
    ScopedLimit,
    denying_rule,
    ratelimit_headers,
    retry_after,
    rule_label,
    worst_case_tokens,
)


@dataclass(slots=True)
class TokensState(Slice):
    """ai-tokens' part of a request: the rate-limit headers of its reservation."""

    headers: dict[str, str] = field(default_factory=dict)


class TokensStage(Stage):
    """Reserves the worst case before the call; puts the usage in the response headers."""

    name = "ai-tokens"
    priority = 771

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        self.cfg = cfg = self.config  # schema-validated: defaults from schemas/ai-tokens.json
        self.usage_headers = bool(cfg["headers"])
        limits = [ScopedLimit(lim["scope"], int(lim["tokens"]), lim["window"],
                              frozenset(lim.get("match") or ()))
                  for lim in cfg.get("limits") or ()]
        self.reserver = Reserver("tok", limits, cfg)
        self.needs_groups = self.reserver.needs_groups
        self.default_max_output = int(cfg["default_max_output"])

    def request(self, ctx: RequestContext) -> None:
        require_router(ctx, "ai-tokens")
        if ctx.api in ("models", "count_tokens") or ctx.answered:
            return  # a cache hit is not charged; counting tokens generates none
        prompt, max_out, per_choice = worst_case_tokens(ctx, self.default_max_output)
        amount = prompt + max_out

        def denied(decision: Decision) -> GatewayError:
            rule = denying_rule(decision)
            if amount > rule.limit:
                # can never fit: a client error that SDKs do not retry (they retry 408/409/429/5xx)
                return GatewayError(400, f"This request needs up to {amount} tokens, more than the whole "
                                         f"limit of {rule.limit} ({rule_label(rule)}); "
                                         "lower max_tokens, n or the prompt.",
                                    code="tokens_exceed_limit", param="max_tokens",
                                    headers=ratelimit_headers(decision))
            return GatewayError(429, f"Token rate limit reached for this consumer ({rule_label(rule)}); "
                                     f"this request needs up to {amount} tokens.",
                                code="rate_limit_exceeded", type_="tokens",
                                headers={"Retry-After": retry_after(decision), **ratelimit_headers(decision)})

        def actual(o: Outcome) -> int | None:
            if o.usage is not None and o.reached_provider:
                return o.usage.total_tokens  # includes streams the client abandoned
            return None  # failed call, denied, or cache hit: release

        def decided(decision: Decision) -> None:  # once the relay committed the batch
            ctx.slot(TokensState).headers.update(ratelimit_headers(decision))

        self.reserver.reserve(ctx, amount, denied, actual, per_choice, decided)

    def headers(self, ctx: RequestContext, ex: Exchange, headers: list[tuple[str, str]]) -> None:
        st = ctx.slots.get(TokensState)
        if isinstance(st, TokensState):
            headers.extend(st.headers.items())
        usage = ex.usage
        if not self.usage_headers or usage is None:
            return
        headers += [("X-AI-Prompt-Tokens", str(usage.input_tokens)),
                    ("X-AI-Completion-Tokens", str(usage.output_tokens)),
                    ("X-AI-Total-Tokens", str(usage.total_tokens))]
        if usage.cache_read_tokens:
            headers.append(("X-AI-Cached-Tokens", str(usage.cache_read_tokens)))
        if usage.estimated:
            headers.append(("X-AI-Tokens-Estimated", "true"))  # same marker as usage.estimated in bodies
        if ex.replayed:
            headers.append(("X-AI-Tokens-Cached", "true"))


TokensRuntime = TokensStage  # the name aigw.validate builds instances by
