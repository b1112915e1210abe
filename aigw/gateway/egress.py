"""The client API's side of the ingress translation: how an answer is written back.

The routing stage translates the client's request into the canonical chat shape
(``aigw.ingress``) and sets the matching writer here as ``ctx.egress``: the pair
is one translator. The engine writes every answer through it and knows no API.
"""
from __future__ import annotations

from typing import Any

import orjson

from .. import sse
from ..context import RequestContext
from ..errors import ANTHROPIC, OPENAI, error_body
from ..ingress import anthropic as anthropic_ingress
from ..ingress import responses as responses_ingress
from ..pipeline import Exchange
from ..types import Usage
from . import responses


class ChatEgress:
    """OpenAI Chat Completions (and embeddings): JSON, or SSE chunks with the final usage
    chunk when the client asked for it (``stream_options.include_usage``)."""

    def __init__(self) -> None:
        self.template: dict[str, Any] | None = None

    def body(self, ctx: RequestContext, resp: dict[str, Any], usage: Usage) -> bytes:
        return orjson.dumps(resp)

    def chunk(self, item: dict[str, Any]) -> bytes:
        if self.template is None:
            self.template = {k: item.get(k) for k in ("id", "object", "created", "model")}
        return sse.encode(item)

    def end(self, ctx: RequestContext, ex: Exchange) -> bytes:
        if not ctx.include_usage or ex.usage is None:
            return sse.DONE
        usage = ex.usage
        u = usage.to_openai()
        if usage.estimated:
            u["estimated"] = True  # the gateway's count: same marker as X-AI-Tokens-Estimated
        u.update(ex.usage_fields)
        final: dict[str, Any] = {**(self.template or {}), "choices": [], "usage": u, **ex.trailer}
        return sse.encode(final) + sse.DONE

    def error(self, message: str) -> bytes:
        return sse.encode(error_body(OPENAI, 502, message, "stream_error"))


class AnthropicEgress:
    """Anthropic Messages from the canonical shape (any non-Anthropic target)."""

    def __init__(self, ctx: RequestContext):
        self.model = ctx.model.name if ctx.model else ""
        self.prompt_tokens = ctx.prompt_count.tokens if ctx.prompt_count is not None else None
        self.encoder: anthropic_ingress.StreamEncoder | None = None

    def body(self, ctx: RequestContext, resp: dict[str, Any], usage: Usage) -> bytes:
        return orjson.dumps(anthropic_ingress.from_openai_response(resp, self.model or resp.get("model", "")))

    def chunk(self, item: dict[str, Any]) -> bytes:
        if self.encoder is None:
            self.encoder = anthropic_ingress.StreamEncoder(self.model, self.prompt_tokens)
        return b"".join(self.encoder.feed(item))

    def end(self, ctx: RequestContext, ex: Exchange) -> bytes:
        if self.encoder is None:
            self.encoder = anthropic_ingress.StreamEncoder(self.model, self.prompt_tokens)
        return b"".join(self.encoder.close(ex.usage))

    def error(self, message: str) -> bytes:
        return sse.encode(error_body(ANTHROPIC, 502, message, "stream_error"), event="error")


class ResponsesEgress:
    """The Responses API: a Response object or its event stream; the turn is saved."""

    def __init__(self, ctx: RequestContext):
        self.ctx = ctx
        self.encoder: responses_ingress.StreamEncoder | None = None

    def body(self, ctx: RequestContext, resp: dict[str, Any], usage: Usage) -> bytes:
        return orjson.dumps(responses.answer(ctx, resp, usage))

    def _enc(self) -> responses_ingress.StreamEncoder:
        if self.encoder is None:
            self.encoder = responses.encoder(self.ctx)
        return self.encoder

    def chunk(self, item: dict[str, Any]) -> bytes:
        return b"".join(self._enc().feed(item))

    def end(self, ctx: RequestContext, ex: Exchange) -> bytes:
        return b"".join(self._enc().close(ex.usage))

    def error(self, message: str) -> bytes:
        return self._enc().error(message)


class RawEgress:
    """A body the terminal already wrote in the client's API (pass-through, count_tokens)."""

    def body(self, ctx: RequestContext, resp: dict[str, Any], usage: Usage | None) -> bytes:
        return orjson.dumps(resp)

    def chunk(self, item: Any) -> bytes:
        event, obj = item
        return sse.encode(obj, event=event)

    def end(self, ctx: RequestContext, ex: Exchange) -> bytes:
        return b""

    def error(self, message: str) -> bytes:
        return sse.encode(error_body(ANTHROPIC, 502, message, "stream_error"), event="error")


def for_request(ctx: RequestContext) -> Any:
    """The writer for the client's API (a new one per request: stream writers keep state)."""
    if ctx.api == "responses":
        return ResponsesEgress(ctx)
    if ctx.api in ("anthropic", "count_tokens"):
        return AnthropicEgress(ctx)
    return ChatEgress()
