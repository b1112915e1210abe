"""Same-API pass-through: an Anthropic Messages client to an Anthropic target.

The canonical chat shape cannot carry ``cache_control``, ``thinking`` /
``redacted_thinking`` blocks and their signatures, documents, citations or
server tools, so when the client speaks the Messages API and the target is
an Anthropic provider the relay sends the client's own body (after ai-redact
rewrote it in place; only ``model`` is replaced by the target's) with the
client's ``anthropic-version`` and ``anthropic-beta`` headers, and relays the
provider's answer as it came: a Message, or its SSE events one by one.

The stages still apply: the answer goes through them as Anthropic items
(``ex.wire == "anthropic"``: a Message, or ``(event, object)`` stream items), so
ai-redact restores placeholders in text and tool input (streamed deltas
included, split anywhere) and never touches thinking blocks and signatures;
usage (with prompt-cache reads and writes) comes from the provider; the
adapter's own decoder runs beside the stream to count, price and give a stage
that keeps the answer (ai-cache) a canonical copy.

Also here: ``POST /v1/messages/count_tokens`` for Anthropic targets, answered
exactly by the provider's own endpoint (the gateway's count is the fallback).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import gevent
import orjson
import urllib3

from .. import sse
from ..cache import assemble_stream
from ..context import RequestContext
from ..errors import GatewayError
from ..gateway.egress import RawEgress
from ..logs import log_failure
from ..pipeline import Exchange, StreamBroken, counted_usage, with_prompt
from ..providers.anthropic import API_VERSION, anthropic_usage
from ..providers.base import ProviderProtocolError, summarize_error
from ..providers.openai_responses import ADAPTER as RESPONSES_ADAPTER
from ..providers.openai_responses import OpenAIResponsesAdapter
from ..routing import Target
from ..types import ProviderConfig, UpstreamRequest, Usage
from .failover import AttemptAdapter, Retryable, read_all
from .output_cap import _prefix_within, allowed_tokens, choice_tokens, delivered_usage
from .upstream import POOL, finish

if TYPE_CHECKING:  # the engine imports the stages that reach this module
    from .app import Engine

FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
# what the count_tokens endpoint accepts (a Messages body minus the generation settings)
_COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
# the text field of a content_block_delta that the output cap counts and cuts, by delta type
_CAPPED_DELTA: dict[str | None, str] = {"text_delta": "text", "input_json_delta": "partial_json"}


def upstream_adapter(ctx: RequestContext, target: Target) -> OpenAIResponsesAdapter | None:
    """Responses API clients reach ``openai`` targets on OpenAI's own Responses API."""
    if ctx.api == "responses" and target.provider.type == "openai":
        return RESPONSES_ADAPTER
    return None


def passes_through(ctx: RequestContext, target: Target) -> bool:
    return ctx.api == "anthropic" and target.provider.type == "anthropic"


def client_body(ctx: RequestContext) -> dict[str, Any]:
    """The client's body as ai-redact left it (the raw body when redaction failed open)."""
    body: dict[str, Any] = ctx.body if isinstance(ctx.body, dict) else orjson.loads(ctx.raw_body)
    return body


def _url(provider: ProviderConfig, path: str) -> str:
    root = provider.base_url.rstrip("/")
    return (root if root.endswith("/v1") else root + "/v1") + path


def _headers(ctx: RequestContext, provider: ProviderConfig) -> dict[str, str]:
    headers = {k.lower(): v for k, v in provider.headers.items()}
    headers["anthropic-version"] = ctx.headers.get("anthropic-version") or \
        headers.get("anthropic-version") or API_VERSION
    beta = ctx.headers.get("anthropic-beta")
    if beta:
        headers["anthropic-beta"] = beta
    headers["content-type"] = "application/json"
    if provider.api_key:
        headers["x-api-key"] = provider.api_key
    return headers


def _signed_only(messages: Any) -> Any:
    """Drop thinking blocks without a signature: the gateway made them from another
    provider's reasoning; Anthropic would reject them."""
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and m.get("role") == "assistant" and any(
                isinstance(b, dict) and b.get("type") == "thinking" and not b.get("signature")
                for b in content):
            out.append({**m, "content": [b for b in content if not (
                isinstance(b, dict) and b.get("type") == "thinking" and not b.get("signature"))]})
        else:
            out.append(m)
    return out


def request(ctx: RequestContext, target: Target) -> UpstreamRequest:
    body = dict(client_body(ctx))
    body["model"] = target.model
    body["messages"] = _signed_only(body.get("messages"))
    if not ctx.stream:
        body.pop("stream", None)
    return UpstreamRequest("POST", _url(target.provider, "/messages"),
                           _headers(ctx, target.provider), orjson.dumps(body))


def _text_of(msg: dict[str, Any]) -> str:
    parts = []
    for block in msg.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text") or "")
        elif isinstance(block, dict) and block.get("type") == "tool_use":
            parts.append(orjson.dumps(block.get("input") or {}).decode())
    return "".join(parts)


# -------------------------------------------------------------- output cap
# The translated path's output cap (aigw/relay/output_cap.py) on Messages as they come:
# text and tool input count and are cut at the cap; thinking counts but is never altered
# (its signature covers it); a cut answer ends with stop_reason "max_tokens" and is
# charged what was delivered.

class _Cap:
    """One answer's delivered output against ``ctx.output_cap`` (None: no cap)."""

    def __init__(self, cap: int | None, model: str):
        self.cap = cap or None
        # (tokens allowed by our count, the counting function); both None without a cap
        self.limit: int | None = None
        self.count: Callable[[str], int] | None = None
        if self.cap:
            self.limit, self.count = allowed_tokens(self.cap, model)
        self.text = ""
        self.sum = 0
        self.cut = False

    def seen(self, text: str) -> None:
        """Output that is relayed whatever the cap (thinking)."""
        if self.count is not None and text:
            self.text += text
            self.sum += self.count(text)

    def take(self, text: str) -> tuple[str, bool]:
        """The part of ``text`` within the cap, and whether the cap was hit."""
        limit, count = self.limit, self.count
        if limit is None or count is None or not text:
            return text, False
        if self.cut:
            return "", True
        n = count(text)
        if self.sum + n <= limit:
            self.sum += n
            self.text += text
            return text, False
        exact = count(self.text + text)  # the per-piece sum over-counts: check exactly
        if exact <= limit:
            self.sum = exact
            self.text += text
            return text, False
        part = _prefix_within(count, self.text, text, limit)
        self.text += part
        self.sum = limit
        self.cut = True
        return part, True

    def delivered(self) -> int:
        if self.count is None:  # no cap: nothing was counted (and nothing cut)
            return 0
        return choice_tokens(self.text, None, self.cap, self.count)


def _cap_message(msg: dict[str, Any], cap: int | None, model: str) -> int | None:
    """Cut a Message's text/tool output to the cap. None when nothing was cut, else the
    output delivered."""
    if not cap:
        return None
    c = _Cap(cap, model)
    kept = []
    for block in msg.get("content") or ():
        if not isinstance(block, dict):
            kept.append(block)
            continue
        kind = block.get("type")
        if kind == "thinking":
            kept.append(block)  # never altered, counted
            c.seen(block.get("thinking") or "")
            continue
        if kind == "text" and isinstance(block.get("text"), str):
            if c.cut:
                continue
            part, hit = c.take(block["text"])
            if hit:
                if part:
                    kept.append({**block, "text": part})
                continue
            kept.append(block)
            continue
        if kind == "tool_use":
            if c.cut:
                continue
            args = orjson.dumps(block.get("input") or {}).decode()
            part, hit = c.take(args)
            if hit:
                continue  # a tool call cut short is not a call: dropped
            kept.append(block)
            continue
        if c.cut:
            continue  # everything after the cut is dropped
        kept.append(block)
    if not c.cut:
        return None
    msg["content"] = kept
    msg["stop_reason"] = "max_tokens"
    msg["stop_sequence"] = None
    return c.delivered()


# ------------------------------------------------------------------ answers

def answer(engine: Engine, ex: Exchange, adapter: AttemptAdapter, target: Target, attempt: dict[str, Any],
           resp: urllib3.BaseHTTPResponse) -> NativeStream | None:
    """The Anthropic target's answer, as it came: a Message (filled into ``ex``) or a
    stream source of its events."""
    ex.wire = "anthropic"
    ex.egress = RawEgress()
    if engine.ctx.stream:
        return _stream(engine, ex, adapter, target, attempt, resp)
    try:
        data = read_all(resp, target.provider.total_timeout)
    except gevent.Timeout:
        raise Retryable("timeout") from None
    except (urllib3.exceptions.HTTPError, OSError):
        raise Retryable("protocol") from None
    try:
        msg = orjson.loads(data)
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
            raise ProviderProtocolError()
        canonical = adapter.chat_response(data, target.model)
    except Exception:
        raise Retryable("protocol") from None
    attempt["result"] = "ok"
    _complete(engine.ctx, ex, msg, canonical, target)
    return None


def _complete(ctx: RequestContext, ex: Exchange, msg: dict[str, Any], canonical: dict[str, Any],
              target: Target) -> None:
    usage = anthropic_usage(msg["usage"]) if isinstance(msg.get("usage"), dict) else None
    if usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0):
        usage = counted_usage(ctx, target.model, _text_of(msg))
    usage = with_prompt(ctx, usage)
    delivered = _cap_message(msg, ctx.output_cap, target.model)
    if delivered is not None:  # cut: charged what was delivered, never kept
        ours = dataclasses.replace(counted_usage(ctx, target.model, ""), output_tokens=delivered)
        usage = with_prompt(ctx, delivered_usage(None if usage.estimated else usage, ours))
        if isinstance(msg.get("usage"), dict):
            msg["usage"]["output_tokens"] = usage.output_tokens
        else:
            msg["usage"] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    ex.outcome.response = copy.deepcopy(canonical) if ex.keep_answer and delivered is None else None
    if ctx.model is not None:
        msg["model"] = ctx.model.name
    ex.response = msg
    ex.usage = usage


_FIRST = ("content_block_start", "content_block_delta", "message_delta", "message_stop")


def _stream(engine: Engine, ex: Exchange, adapter: AttemptAdapter, target: Target, attempt: dict[str, Any],
            resp: urllib3.BaseHTTPResponse) -> NativeStream:
    """Wait for the first content event (failover is still possible), then relay."""
    p = target.provider
    out = NativeStream(engine.ctx, ex, adapter, target, resp)
    first: list[sse.Event] = []
    try:
        with gevent.Timeout(p.first_byte_timeout):
            while not any(_kind(ev) in _FIRST for ev in first):
                raw = resp.read1(65536)
                if not raw:
                    first += out.close_decoders()
                    break
                first += out.decode(raw)
    except gevent.Timeout:
        resp.close()
        raise Retryable("first_token_timeout") from None
    except Exception:
        raise Retryable("protocol") from None
    if not any(_kind(ev) in _FIRST for ev in first):
        raise Retryable("protocol")
    engine.outcome.ttft = time.perf_counter() - engine.t0
    attempt["result"] = "ok"
    out.first = first
    return out


def _kind(ev: sse.Event) -> str | None:
    if ev.event:
        return ev.event
    try:
        obj = orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        return None
    return obj.get("type") if isinstance(obj, dict) else None


class NativeStream:
    """The provider's Messages events as ``(event, object)`` items, one by one (capped)."""

    def __init__(self, ctx: RequestContext, ex: Exchange | None, adapter: AttemptAdapter, target: Target,
                 resp: urllib3.BaseHTTPResponse | None = None):
        self.ctx = ctx
        self.ex = ex
        self.target = target
        self.resp = resp
        self.events = sse.SSEDecoder()
        self.canonical = adapter.chat_stream(target.model)  # accounting and the kept copy
        self.keep = ex is not None and ex.keep_answer
        self.chunks: list[dict[str, Any]] = []
        self.text: list[str] = []
        self.finished = False
        self.first: list[sse.Event] = []
        self.cap = _Cap(ctx.output_cap, target.model)
        self.closed = False

    def decode(self, raw: bytes) -> list[sse.Event]:
        self._account(self.canonical.feed(raw))
        return self.events.feed(raw)

    def close_decoders(self) -> list[sse.Event]:
        self._account(self.canonical.close())
        return self.events.close()

    def _account(self, chunks: list[dict[str, Any]]) -> None:
        for c in chunks:
            if self.keep:
                self.chunks.append(c)
            for ch in c.get("choices") or ():
                d = ch.get("delta") or {}
                if isinstance(d.get("content"), str):
                    self.text.append(d["content"])
                for tc in d.get("tool_calls") or ():
                    args = (tc.get("function") or {}).get("arguments")
                    if isinstance(args, str):
                        self.text.append(args)

    def event(self, ev: sse.Event) -> Iterator[tuple[str | None, dict[str, Any]]]:
        if self.cap.cut or not ev.data.strip():
            return  # after a cut nothing more of the provider's is relayed
        try:
            obj = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            raise ProviderProtocolError() from None
        if not isinstance(obj, dict):
            raise ProviderProtocolError()
        kind = obj.get("type") or ev.event
        if kind == "message_start" and isinstance(obj.get("message"), dict) and self.ctx.model:
            obj["message"]["model"] = self.ctx.model.name
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            idx = obj.get("index", 0)
            field = _CAPPED_DELTA.get(delta.get("type"))
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                self.cap.seen(delta["thinking"])  # counted, never altered
            elif field and isinstance(delta.get(field), str):
                part, hit = self.cap.take(delta[field])
                delta[field] = part
                if hit:
                    yield from self._cut(obj, ev, idx)
                    return
        elif kind == "message_stop":
            self.finished = True
        yield (ev.event or kind, obj)

    def _cut(self, obj: dict[str, Any], ev: sse.Event, index: int) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """The cap was hit in this delta: relay its part, end the block and the message."""
        delta = obj.get("delta") or {}
        if any(isinstance(v, str) and v for k, v in delta.items() if k != "type"):
            yield (ev.event or "content_block_delta", obj)
        yield ("content_block_stop", {"type": "content_block_stop", "index": index})
        yield ("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                                 "usage": {"output_tokens": self.usage().output_tokens}})
        yield ("message_stop", {"type": "message_stop"})
        self.finished = True

    def usage(self) -> Usage:
        ctx = self.ctx
        if self.cap.cut:  # charged what was delivered (aigw/relay/output_cap.py)
            ours = dataclasses.replace(counted_usage(ctx, self.target.model, ""),
                                       output_tokens=self.cap.delivered())
            provider = self.canonical.usage
            return with_prompt(ctx, delivered_usage(
                None if provider is None or provider.estimated else provider, ours))
        return with_prompt(ctx, self.canonical.usage or counted_usage(ctx, self.target.model,
                                                                      "".join(self.text)))

    def items(self) -> Iterator[tuple[str | None, dict[str, Any]]]:
        resp = self.resp
        try:
            for ev in self.first:
                yield from self.event(ev)
            with gevent.Timeout(self.target.provider.total_timeout):
                while not self.finished:
                    raw = resp.read1(65536) if resp is not None else b""
                    if not raw:
                        for ev in self.close_decoders():
                            yield from self.event(ev)
                        break
                    for ev in self.decode(raw):
                        yield from self.event(ev)
        except gevent.Timeout:
            raise StreamBroken("The provider stream timed out.", "stream_timeout") from None
        except GeneratorExit:
            raise
        except Exception as exc:
            log_failure("relay", "native-stream", exc)
            raise StreamBroken("The provider stream ended unexpectedly.", "stream_broken") from None
        if not self.finished:
            raise StreamBroken("The provider stream ended unexpectedly.", "stream_broken")
        if self.ex is not None:
            self.ex.complete = True
            if self.chunks and not self.cap.cut:  # a cut answer is not kept
                try:
                    self.ex.outcome.response = assemble_stream(self.chunks)
                except Exception:
                    self.ex.outcome.response = None

    def close(self) -> None:
        if self.closed or self.resp is None:
            return
        self.closed = True
        # pooled only once read to its end (the chunked terminator after message_stop);
        # broken, or cut with the provider still producing: never pooled
        finish(self.resp, self.finished and not self.cap.cut)


# -------------------------------------------------------------- count_tokens

def count_tokens(engine: Engine, ex: Exchange) -> None:
    """Exact count from the first Anthropic target; the gateway's own count otherwise
    (or when that provider fails: a count is an estimate the client can live with)."""
    ctx = engine.ctx
    outcome = ex.outcome
    exact = None
    for target in ctx.plan:
        if target.provider.type != "anthropic":
            continue
        p = target.provider
        outcome.target = target
        attempt: dict[str, Any] = {"provider": p.name, "model": target.model}
        outcome.attempts.append(attempt)
        src = client_body(ctx)
        body = {k: src[k] for k in _COUNT_FIELDS if k in src}
        body["model"] = target.model
        try:
            r = POOL.urlopen("POST", _url(p, "/messages/count_tokens"), body=orjson.dumps(body),
                             headers=_headers(ctx, p), retries=False, redirect=False,
                             timeout=urllib3.Timeout(connect=p.connect_timeout,
                                                     read=p.first_byte_timeout))
        except (urllib3.exceptions.HTTPError, OSError):
            attempt["result"] = "connect"
            continue
        outcome.reached_provider = True
        attempt["status"] = r.status
        if r.status >= 400:
            if 400 <= r.status < 500 and r.status not in (401, 403, 404, 429):
                summary = relay_summary(r.data)
                attempt["result"] = "error"
                raise GatewayError(r.status, f"Provider '{p.name}' rejected the request "
                                             f"({r.status}): {summary}", code="provider_error")
            attempt["result"] = "status"
            continue
        try:
            got = orjson.loads(r.data)
            exact = int(got["input_tokens"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            attempt["result"] = "protocol"
            continue
        attempt["result"] = "ok"
        break
    tokens = exact if exact is not None else (ctx.prompt_count.tokens if ctx.prompt_count else 0)
    ex.wire = "raw"
    ex.egress = RawEgress()
    ex.response = {"input_tokens": tokens}
    ex.head.append(("X-AI-Token-Count", "exact" if exact is not None else "estimated"))
    return None


def relay_summary(data: bytes) -> str:
    return summarize_error(400, data)[:200]
