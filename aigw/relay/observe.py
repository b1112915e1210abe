"""One structured log line and the metrics for every finished request.

Field names follow the OpenTelemetry GenAI semantic conventions
(``gen_ai.*``); our own fields are namespaced ``aigw.*``.  Only counts,
names and numbers are logged: never prompt or answer text, never keys.
"""
from __future__ import annotations

import logging
from typing import Any

import orjson

from .. import metrics
from ..context import Outcome, RequestContext
from ..providers.registry import PROVIDERS

log = logging.getLogger("aigw.access")

# OpenTelemetry gen_ai.provider.name well-known values, from the provider registry
PROVIDER_NAMES = {name: p.otel_name for name, p in PROVIDERS.items()}
_OTEL_PROVIDER = PROVIDER_NAMES


def operation_name(ctx: RequestContext) -> str:
    """gen_ai.operation.name of a request."""
    return "embeddings" if ctx.api == "embeddings" else "chat"


def observe(ctx: RequestContext, outcome: Outcome) -> None:
    target = outcome.target
    event: dict[str, Any] = {
        "event": "aigw.request",
        "aigw.request_id": ctx.id,
        "aigw.api": ctx.api,
        "aigw.consumer": ctx.consumer_name,
        "http.response.status_code": outcome.status,
        "gen_ai.operation.name": operation_name(ctx),
        "gen_ai.request.model": ctx.model.name if ctx.model is not None else None,
        "gen_ai.response.model": target.model if target is not None else None,
        "gen_ai.provider.name": _OTEL_PROVIDER.get(target.provider.type) if target is not None else None,
        "aigw.provider": target.provider.name if target is not None else None,
        "aigw.variant": target.variant if target is not None else None,
        "aigw.stream": ctx.stream,
        "aigw.attempts": outcome.attempts,
        "aigw.duration_ms": round(outcome.duration * 1000, 2),
        "aigw.ttft_ms": round(outcome.ttft * 1000, 2) if outcome.ttft is not None else None,
        "aigw.cache.status": outcome.cache_status,
        "aigw.cost_usd": outcome.cost_usd,
        "aigw.error": outcome.error,
    }
    if outcome.usage is not None:
        event.update(outcome.usage.otel_fields())
        event["aigw.usage.estimated"] = outcome.usage.estimated
    if ctx.prompt_count is not None:
        event["aigw.prompt_tokens.counted"] = ctx.prompt_count.tokens
    for part in ctx.slots.values():  # each stage's own fields (aigw.context.Slice.log_fields)
        event.update(part.log_fields())
    event.update(ctx.log_fields)
    log.info(orjson.dumps(event, default=str).decode())
    metrics.record_request(
        model=event["gen_ai.request.model"] or "", response_model=event["gen_ai.response.model"] or "",
        provider=event["aigw.provider"] or "", consumer=ctx.consumer_name or "",
        status=outcome.status, duration_s=outcome.duration, ttft_s=outcome.ttft,
        usage=outcome.usage, cost=outcome.cost_usd, operation=event["gen_ai.operation.name"],
        reached_provider=outcome.reached_provider)
    if outcome.cache_status:
        metrics.record_cache(outcome.cache_status)
