from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import orjson

from ..context import RequestContext
from ..errors import GatewayError
from ..ingress.anthropic import to_openai_request
from ..ingress.openai import validate_chat, validate_embeddings
from ..pipeline import Respond

__all__ = ["Respond", "parse_body", "validate_shape", "anthropic_body", "require_router",
           "off_loop", "maybe_off_loop"]


def parse_body(ctx: RequestContext) -> Any:
    """The client's JSON body, parsed once per request whichever plugin asks first."""
    if ctx.body is None:
        if not ctx.raw_body:
            raise GatewayError(400, "The request body is empty; a JSON object is required.",
                               code="invalid_json")
        try:
            ctx.body = orjson.loads(ctx.raw_body)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "The request body is not valid JSON.", code="invalid_json") from None
        if not isinstance(ctx.body, dict):
            raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
        validate_shape(ctx.api, ctx.body)
    return ctx.body


def validate_shape(api: str, body: dict[str, Any]) -> None:
    """The request's shape checked once, by the first plugin that reads the body, so a
    client's mistake is a 400 in its API's format before any plugin works on it."""
    try:
        _validate_shape(api, body)
    except GatewayError:
        raise
    except (TypeError, AttributeError, KeyError, ValueError):
        # a shape the checks did not foresee (``"type": ["text"]`` is unhashable): still
        # the client's mistake, and still refused before anything is scanned or sent
        raise GatewayError(400, "The request body does not have the shape this API accepts.",
                           code="invalid_request") from None


def _validate_shape(api: str, body: dict[str, Any]) -> None:
    if api == "chat":
        validate_chat(body)
    elif api == "embeddings":
        validate_embeddings(body)
    elif api in ("anthropic", "count_tokens"):
        # the translation checks every field it reads; blocks only an Anthropic target
        # reads (documents, server tools) are collected, not refused
        to_openai_request(anthropic_body(api, body), dropped=[])


def anthropic_body(api: str, body: dict[str, Any]) -> dict[str, Any]:
    """A count_tokens body is a Messages body without the generation settings."""
    if api == "count_tokens":
        return {**body, "max_tokens": body.get("max_tokens") or 1, "stream": False}
    return body


def require_router(ctx: RequestContext, plugin: str) -> None:
    if ctx.terminal is None and ctx.api != "models":
        raise GatewayError(500, f"{plugin} needs the ai-router plugin on the same route.",
                           code="gateway_misconfigured")


# Bodies above this size are scanned and counted in a worker thread: a 1 MiB prompt
# takes ~115 ms of CPU, which on the gevent loop would stall every other request.
OFF_LOOP_BYTES = 64 * 1024

T = TypeVar("T")


def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-heavy work (large scans and counts, embeddings) in a real thread of the
    gevent hub's pool, so the loop keeps serving other requests meanwhile."""
    return gevent.get_hub().threadpool.apply(fn, args)


def maybe_off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    return off_loop(fn, *args) if size > OFF_LOOP_BYTES else fn(*args)
