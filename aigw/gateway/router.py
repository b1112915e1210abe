"""ai-router's access decision: parse, translate ingress, resolve, allow, plan."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from ..context import RequestContext
from ..errors import GatewayError
from ..ingress.anthropic import to_openai_request
from ..ingress.responses_state import state_store
from ..pipeline import Exchange, Stage
from ..relay.provider import ProviderCall
from ..routing import ModelSpec, Needs, RouterConfig, sticky_key
from ..tokens import counting
from ..tokens.counting import Count
from . import egress
from .common import Respond, anthropic_body, maybe_off_loop, parse_body
from .responses import prepare


def provider_env_overrides(cfg: dict[str, Any],
                           env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Development/test override: ``AIGW_PROVIDER_<NAME>_BASE_URL`` (name upper-cased,
    ``-`` → ``_``) replaces that provider's ``base_url``, so ``make dev`` and the
    tests point the production-shaped kong.yml at local mock providers."""
    environ: Mapping[str, str] = os.environ if env is None else env
    out = dict(cfg)
    provs = []
    for p in cfg.get("providers") or ():
        name = str(p.get("name", "")).upper().replace("-", "_")
        url = environ.get(f"AIGW_PROVIDER_{name}_BASE_URL")
        provs.append({**p, "base_url": url} if url else p)
    out["providers"] = provs
    return out


# ai-router's anonymous policy per Kong scope (route_id, service_id), so that ai-redact, which
# runs first (pipeline order 780 > 775) and reads the body, refuses an anonymous request with the
# same 401 before it could answer 400 for its body: authentication is decided before content.
_ANONYMOUS_ALLOWED: dict[tuple[str, str], bool] = {}


def _scope(cfg: dict[str, Any]) -> tuple[str, str]:
    return (str(cfg.get("route_id") or ""), str(cfg.get("service_id") or ""))


def refuse_anonymous(ctx: RequestContext, cfg: dict[str, Any] | None = None,
                     allowed: bool | None = None) -> None:
    """401 for Kong's anonymous consumer unless the route's ai-router allows it (``allowed``
    given by ai-router itself; else looked up by the calling plugin's scope)."""
    if allowed is None:
        allowed = _ANONYMOUS_ALLOWED.get(_scope(cfg or {}), True)
    if not allowed and ctx.headers.get("x-anonymous-consumer") == "true":
        # Kong's auth plugins with `anonymous` (logical OR of jwt and key-auth) let a request
        # without valid credentials through as the anonymous consumer and say so in this
        # header (set_consumer in kong/plugins/{key-auth,jwt}/handler.lua; cleared whenever
        # a credential matched, so a client cannot forge it past a successful login)
        raise GatewayError(401, "Authentication required: send a valid key as 'Authorization: "
                                "Bearer <key>' or 'x-api-key: <key>'.", code="unauthorized")


class RouterStage(Stage):
    """Resolves the model and plans the targets (request side); calls the provider with
    failover as the pipeline's terminal step; names the served target in the headers."""

    name = "ai-router"
    priority = 775

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        cfg = provider_env_overrides(cfg)
        self.routing = RouterConfig.from_dict(cfg)
        self.breaker = self.routing.make_breaker()
        self.failover_status = set(self.routing.retry_on_status)
        self.max_body = self.routing.max_body_bytes
        self.prices = self.routing.prices  # the route's one price table (ai-cost charges by it)
        self.needs_groups = any(m.allow_groups for m in self.routing.models.values())
        # plugins that must have completed their decision before the relay forwards
        # cfg is schema-validated (plugin_base): its defaults come from schemas/ai-router.json
        self.required_plugins = frozenset(cfg["required_plugins"])
        self.allow_anonymous = bool(cfg["allow_anonymous"])
        _ANONYMOUS_ALLOWED[_scope(cfg)] = self.allow_anonymous
        self.responses_store = state_store(cfg.get("responses"))
        self.call = ProviderCall(self.breaker, self.failover_status, self.required_plugins)

    # ------------------------------------------------------------------
    def request(self, ctx: RequestContext) -> None:
        refuse_anonymous(ctx, allowed=self.allow_anonymous)
        consumer = ctx.consumer_name
        groups = ctx.groups or []
        if ctx.api == "models":
            raise Respond(200, self.models_list(consumer, groups))
        if len(ctx.raw_body) > self.max_body:
            raise GatewayError(413, f"The request body exceeds the limit of {self.max_body} bytes.",
                               code="request_too_large")
        body = parse_body(ctx)  # checks the shape (common.validate_shape)
        native_only: list[str] = []  # Anthropic content only an Anthropic target can read
        if ctx.api == "responses":
            canonical = prepare(ctx, body, self.responses_store)
        elif ctx.api in ("anthropic", "count_tokens"):
            canonical = to_openai_request(anthropic_body(ctx.api, body), dropped=native_only)
        else:
            canonical = body
        requested = canonical.get("model")
        if requested is not None and not isinstance(requested, str):
            raise GatewayError(400, "'model' must be a string.", code="invalid_model", param="model")
        spec = self.routing.resolve(requested)
        if spec is None:
            if requested:  # the name is not echoed: a client-supplied string may carry anything
                raise GatewayError(404, "The requested model does not exist or is not served by this "
                                        "gateway; GET /v1/models lists the models you may use.",
                                   code="model_not_found", param="model")
            raise GatewayError(400, "'model' is required.", code="missing_model", param="model")
        if not self.routing.allowed(spec, consumer, groups):
            raise GatewayError(403, f"You are not allowed to use the model '{spec.name}'.",
                               code="model_not_allowed", param="model")
        capability = "embeddings" if ctx.api == "embeddings" else "chat"
        stream = bool(canonical.get("stream")) and capability == "chat"
        so = canonical.get("stream_options")
        include_usage = stream and ctx.api == "chat" and isinstance(so, dict) and so.get("include_usage") is True
        count = maybe_off_loop(len(ctx.raw_body), self._count, canonical, spec, capability)
        max_out = canonical.get("max_completion_tokens") or canonical.get("max_tokens")
        max_out = max_out if isinstance(max_out, int) and max_out > 0 else None
        needs = Needs(capability=capability, stream=stream, tools=bool(canonical.get("tools")),
                      vision=_has_images(canonical), prompt_tokens=count.tokens, max_output=max_out)
        plan = self.routing.plan(spec, needs, sticky_key=sticky_key(spec, consumer, ctx.headers),
                                data_classes=ctx.data_classes, prices=self.prices, breaker=self.breaker)
        err = plan.error()
        if err is not None:
            raise err
        targets = plan.targets
        if native_only:
            targets = [t for t in targets if t.provider.type == "anthropic"]
            if not targets:
                raise GatewayError(400, f"Content of type {native_only[0]!r} can only be sent to an "
                                        f"Anthropic model; '{spec.name}' has no Anthropic target.",
                                   code="not_supported", param="messages")
        ctx.model = spec
        ctx.plan = targets
        ctx.canonical = canonical
        ctx.stream = stream
        ctx.include_usage = include_usage
        ctx.prompt_count = count
        ctx.max_output = max_out
        ctx.prices = self.prices  # ai-cost charges by the table the plan was ordered by
        ctx.provide(self.call)
        ctx.egress = egress.for_request(ctx)
        if ctx.api == "count_tokens" and not any(t.provider.type == "anthropic" for t in targets):
            # the gateway's own count, in Anthropic's format (exact counts come from the
            # provider's count_tokens endpoint, for Anthropic targets, in the relay)
            raise Respond(200, {"input_tokens": count.tokens}, {"X-AI-Token-Count": "estimated"})

    def _count(self, canonical: dict[str, Any], spec: ModelSpec, capability: str) -> Count:
        model = spec.targets[0].model
        if capability == "embeddings":
            return counting.count_embeddings(canonical.get("input", ""), model)
        return counting.count_chat(canonical, model)

    def models_list(self, consumer: str | None, groups: list[str]) -> dict[str, Any]:
        now = int(time.time())
        data = []
        for spec in self.routing.visible_models(consumer, groups):
            for name in (spec.name, *spec.aliases):
                data.append({"id": name, "object": "model", "created": now, "owned_by": "aigw"})
        return {"object": "list", "data": data}


    def headers(self, ctx: RequestContext, ex: Exchange, headers: list[tuple[str, str]]) -> None:
        """Which target answered, after which attempts."""
        out = ex.outcome
        t = out.target
        if t is not None:
            headers.append(("X-AI-Model", t.model))
            headers.append(("X-AI-Provider", t.provider.name))
            if t.variant:
                headers.append(("X-AI-Variant", t.variant))
        if out.attempts:
            headers.append(("X-AI-Attempts", str(len(out.attempts))))
            headers.append(("X-AI-Attempt-Log", ", ".join(
                f"{a['provider']}/{a['model']}={a.get('result', '?')}"
                + (f":{a['status']}" if a.get("status") else "") for a in out.attempts)))


RouterRuntime = RouterStage  # the name aigw.validate builds instances by


def _has_images(body: dict[str, Any]) -> bool:
    for m in body.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in c):
            return True
    return False
