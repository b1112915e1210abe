"""Same-API pass-through: an Anthropic Messages client to an Anthropic target.

The canonical chat shape cannot carry ``cache_control``, ``thinking`` /
``redacted_thinking`` blocks and their signatures, documents, citations or
server tools, so when the client speaks the Messages API and the target is
an Anthropic provider the relay sends the client's own body (after ai-redact
rewrote it in place; only ``model`` is replaced by the target's) with the
client's ``anthropic-version`` and ``anthropic-beta`` headers, and relays the
provider's answer as it came: a Message, or its SSE events one by one.

The plugins still apply: placeholders are restored in text and tool input
(streamed deltas included, split anywhere), thinking blocks and signatures
are never touched; usage (with prompt-cache reads and writes) comes from the
provider; the adapter's own decoder runs beside the stream to count, price
and give ai-cache a canonical copy.

Also here: ``POST /v1/messages/count_tokens`` for Anthropic targets, answered
exactly by the provider's own endpoint (the gateway's count is the fallback).
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Iterator

import gevent
import orjson
import urllib3

from .. import sse
from ..errors import ANTHROPIC, GatewayError, error_body
from ..providers.anthropic import API_VERSION, anthropic_usage
from ..providers.base import ProviderProtocolError
from ..types import UpstreamRequest, Usage

FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
# what the count_tokens endpoint accepts (a Messages body minus the generation settings)
_COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
_STORES_ANSWER = ("Miss", "Refresh")


def upstream_adapter(ctx, target):
    """Responses API clients reach ``openai`` targets on OpenAI's own Responses API."""
    if ctx.api == "responses" and target.provider.type == "openai":
        from ..providers.openai_responses import ADAPTER
        return ADAPTER
    return None


def passes_through(ctx, target) -> bool:
    return ctx.api == "anthropic" and target.provider.type == "anthropic"


def client_body(ctx) -> dict[str, Any]:
    """The client's body as ai-redact left it (the raw body when redaction failed open)."""
    body = ctx.body if isinstance(ctx.body, dict) else orjson.loads(ctx.raw_body)
    return body


def _url(provider, path: str) -> str:
    root = provider.base_url.rstrip("/")
    return (root if root.endswith("/v1") else root + "/v1") + path


def _headers(ctx, provider) -> dict[str, str]:
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
            m = {**m, "content": [b for b in content if not (
                isinstance(b, dict) and b.get("type") == "thinking" and not b.get("signature"))]}
        out.append(m)
    return out


def request(ctx, target) -> UpstreamRequest:
    body = dict(client_body(ctx))
    body["model"] = target.model
    body["messages"] = _signed_only(body.get("messages"))
    if not ctx.stream:
        body.pop("stream", None)
    return UpstreamRequest("POST", _url(target.provider, "/messages"),
                           _headers(ctx, target.provider), orjson.dumps(body))


# -------------------------------------------------------------- restoring

def _restore_leaves(value: Any, restore_map: dict[str, str]) -> Any:
    from ..redact.restore import restore_text
    if isinstance(value, str):
        return restore_text(value, restore_map)
    if isinstance(value, dict):
        return {k: _restore_leaves(v, restore_map) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_leaves(v, restore_map) for v in value]
    return value


def _restore_message(msg: dict[str, Any], restore_map: dict[str, str]) -> None:
    from ..redact.restore import restore_text
    for block in msg.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            block["text"] = restore_text(block["text"], restore_map)
        elif block.get("type") in ("tool_use", "server_tool_use") and "input" in block:
            block["input"] = _restore_leaves(block["input"], restore_map)
        # thinking / redacted_thinking: signed by the provider, never changed


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
        from .output_cap import allowed_tokens
        self.cap = cap or None
        self.limit, self.count = allowed_tokens(self.cap, model) if self.cap else (None, None)
        self.text = ""
        self.sum = 0
        self.cut = False

    def seen(self, text: str) -> None:
        """Output that is relayed whatever the cap (thinking)."""
        if self.cap and text:
            self.text += text
            self.sum += self.count(text)

    def take(self, text: str) -> tuple[str, bool]:
        """The part of ``text`` within the cap, and whether the cap was hit."""
        if not self.cap or not text:
            return text, False
        if self.cut:
            return "", True
        n = self.count(text)
        if self.sum + n <= self.limit:
            self.sum += n
            self.text += text
            return text, False
        exact = self.count(self.text + text)  # the per-piece sum over-counts: check exactly
        if exact <= self.limit:
            self.sum = exact
            self.text += text
            return text, False
        from .output_cap import _prefix_within
        part = _prefix_within(self.count, self.text, text, self.limit)
        self.text += part
        self.sum = self.limit
        self.cut = True
        return part, True

    def delivered(self) -> int:
        from .output_cap import choice_tokens
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

def answer(relay, adapter, target, attempt: dict[str, Any], resp, start_response: Callable):
    from .app import Retryable, _read_all
    if relay.ctx.stream:
        return _stream(relay, adapter, target, attempt, resp, start_response)
    try:
        data = _read_all(resp, target.provider.total_timeout)
    except gevent.Timeout:
        raise Retryable("timeout")
    except (urllib3.exceptions.HTTPError, OSError):
        raise Retryable("protocol")
    try:
        msg = orjson.loads(data)
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
            raise ProviderProtocolError()
        canonical = adapter.chat_response(data, target.model)
    except Exception:
        raise Retryable("protocol")
    attempt["result"] = "ok"
    return _respond(relay, start_response, msg, canonical, target)


def _respond(relay, start_response: Callable, msg: dict[str, Any], canonical: dict[str, Any],
             target) -> list[bytes]:
    from .app import _Closing
    ctx = relay.ctx
    usage = anthropic_usage(msg["usage"]) if isinstance(msg.get("usage"), dict) else None
    if usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0):
        usage = relay._counted_usage(_text_of(msg))
    usage = relay._with_prompt(usage)
    delivered = _cap_message(msg, ctx.output_cap, target.model)
    if delivered is not None:  # cut: charged what was delivered, never cached
        import dataclasses
        from .output_cap import delivered_usage
        ours = dataclasses.replace(relay._counted_usage(""), output_tokens=delivered)
        usage = relay._with_prompt(delivered_usage(None if usage.estimated else usage, ours))
        if isinstance(msg.get("usage"), dict):
            msg["usage"]["output_tokens"] = usage.output_tokens
        else:
            msg["usage"] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    relay.outcome.response = copy.deepcopy(canonical) if (
        ctx.cache_status in _STORES_ANSWER and delivered is None) else None
    if ctx.restore_map:
        _restore_message(msg, ctx.restore_map)
    if ctx.model is not None:
        msg["model"] = ctx.model.name
    relay.outcome.usage = usage
    relay.outcome.status = 200
    cost = relay._cost(usage, target)
    relay.outcome.cost_usd = cost
    body = orjson.dumps(msg)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    headers += relay._served_headers()
    headers += relay._usage_headers(usage, cost, False)
    start_response("200 OK", headers)
    return _Closing(body, relay._finish)


_FIRST = ("content_block_start", "content_block_delta", "message_delta", "message_stop")


def _stream(relay, adapter, target, attempt: dict[str, Any], resp, start_response: Callable):
    """Wait for the first content event (failover is still possible), then relay."""
    from .app import Retryable
    p = target.provider
    out = NativeStream(relay, adapter, target)
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
        raise Retryable("first_token_timeout")
    except Exception:
        raise Retryable("protocol")
    if not any(_kind(ev) in _FIRST for ev in first):
        raise Retryable("protocol")
    relay.outcome.ttft = time.perf_counter() - relay.t0
    attempt["result"] = "ok"
    headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
    headers += relay._served_headers()
    start_response("200 OK", headers)
    return out.body(first, resp)


def _kind(ev: sse.Event) -> str | None:
    if ev.event:
        return ev.event
    try:
        obj = orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        return None
    return obj.get("type") if isinstance(obj, dict) else None


class NativeStream:
    """The provider's Messages events, restored and re-encoded one by one."""

    def __init__(self, relay, adapter, target):
        self.relay = relay
        self.ctx = relay.ctx
        self.target = target
        self.events = sse.SSEDecoder()
        self.canonical = adapter.chat_stream(target.model)  # accounting and the cache's copy
        self.chunks: list[dict[str, Any]] = []
        self.text: list[str] = []
        self.restorers: dict[tuple[int, str], Any] = {}
        self.finished = False
        self.cap = _Cap(self.ctx.output_cap, target.model)

    def decode(self, raw: bytes) -> list[sse.Event]:
        self._account(self.canonical.feed(raw))
        return self.events.feed(raw)

    def close_decoders(self) -> list[sse.Event]:
        self._account(self.canonical.close())
        return self.events.close()

    def _account(self, chunks: list[dict[str, Any]]) -> None:
        for c in chunks:
            if self.ctx.cache_status in _STORES_ANSWER:
                self.chunks.append(c)
            for ch in c.get("choices") or ():
                d = ch.get("delta") or {}
                if isinstance(d.get("content"), str):
                    self.text.append(d["content"])
                for tc in d.get("tool_calls") or ():
                    args = (tc.get("function") or {}).get("arguments")
                    if isinstance(args, str):
                        self.text.append(args)

    def _restorer(self, index: int, kind: str):
        from ..redact.restore import StreamRestorer
        from .app import _json_escaped
        key = (index, kind)
        r = self.restorers.get(key)
        if r is None:
            m = self.ctx.restore_map if kind == "text" else _json_escaped(self.ctx.restore_map)
            r = self.restorers[key] = StreamRestorer(m)
        return r

    def event(self, ev: sse.Event) -> Iterator[bytes]:
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
            field = {"text_delta": "text", "input_json_delta": "partial_json"}.get(delta.get("type"))
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                self.cap.seen(delta["thinking"])  # counted, never altered
            elif field and isinstance(delta.get(field), str):
                part, hit = self.cap.take(delta[field])
                delta[field] = part
                if self.ctx.restore_map:
                    delta[field] = self._restorer(idx, "text" if field == "text" else "json").feed(part)
                if hit:
                    yield from self._cut(obj, ev, idx)
                    return
        elif kind == "content_block_stop" and self.ctx.restore_map:
            yield from self._flush(obj.get("index", 0))
        elif kind == "message_stop":
            self.finished = True
        yield sse.encode(obj, event=ev.event or kind)

    def _cut(self, obj: dict[str, Any], ev: sse.Event, index: int) -> Iterator[bytes]:
        """The cap was hit in this delta: relay its part, end the block and the message."""
        delta = obj.get("delta") or {}
        if any(isinstance(v, str) and v for k, v in delta.items() if k != "type"):
            yield sse.encode(obj, event=ev.event or "content_block_delta")
        if self.ctx.restore_map:
            yield from self._flush(index)
        yield sse.encode({"type": "content_block_stop", "index": index}, event="content_block_stop")
        yield sse.encode({"type": "message_delta",
                          "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                          "usage": {"output_tokens": self._usage().output_tokens}}, event="message_delta")
        yield sse.encode({"type": "message_stop"}, event="message_stop")
        self.finished = True

    def _flush(self, index: int) -> Iterator[bytes]:
        for kind, field, dtype in (("text", "text", "text_delta"),
                                   ("json", "partial_json", "input_json_delta")):
            r = self.restorers.pop((index, kind), None)
            tail = r.flush() if r is not None else ""
            if tail:
                yield sse.encode({"type": "content_block_delta", "index": index,
                                  "delta": {"type": dtype, field: tail}}, event="content_block_delta")

    def _usage(self) -> Usage:
        relay = self.relay
        if self.cap.cut:  # charged what was delivered (aigw/relay/output_cap.py)
            import dataclasses
            from .output_cap import delivered_usage
            ours = dataclasses.replace(relay._counted_usage(""), output_tokens=self.cap.delivered())
            provider = self.canonical.usage
            return relay._with_prompt(delivered_usage(
                None if provider is None or provider.estimated else provider, ours))
        return relay._with_prompt(self.canonical.usage or relay._counted_usage("".join(self.text)))

    def body(self, first: list[sse.Event], resp) -> Iterator[bytes]:
        relay = self.relay
        ctx = self.ctx
        ok = False
        try:
            for ev in first:
                yield from self.event(ev)
            with gevent.Timeout(self.target.provider.total_timeout):
                while not self.finished:
                    raw = resp.read1(65536)
                    if not raw:
                        for ev in self.close_decoders():
                            yield from self.event(ev)
                        break
                    for ev in self.decode(raw):
                        yield from self.event(ev)
            ok = self.finished
            usage = self._usage()
            relay.outcome.usage = usage
            relay.outcome.cost_usd = relay._cost(usage, self.target)
            if ok and self.chunks and not self.cap.cut:  # a cut answer is not cached
                from ..cache import assemble_stream
                try:
                    relay.outcome.response = assemble_stream(self.chunks)
                except Exception:
                    relay.outcome.response = None
            if not ok:
                relay.outcome.error = "stream_broken"
                yield sse.encode(error_body(ANTHROPIC, 502, "The provider stream ended unexpectedly.",
                                            "stream_error"), event="error")
        except gevent.Timeout:
            relay.outcome.error = "stream_timeout"
            relay.outcome.usage = self._usage()
            yield sse.encode(error_body(ANTHROPIC, 502, "The provider stream timed out.",
                                        "stream_error"), event="error")
        except GeneratorExit:
            relay.outcome.error = relay.outcome.error or "client_disconnected"
            relay.outcome.usage = self._usage()
            relay.outcome.status = 499
            raise
        except Exception as exc:
            from ..plugin_base import log_failure
            log_failure("relay", "native-stream", exc)
            relay.outcome.error = "stream_broken"
            relay.outcome.usage = self._usage()
            yield sse.encode(error_body(ANTHROPIC, 502, "The provider stream ended unexpectedly.",
                                        "stream_error"), event="error")
        finally:
            from .upstream import finish
            # pooled only once read to its end (the chunked terminator after message_stop);
            # broken, or cut with the provider still producing: never pooled
            finish(resp, ok and not self.cap.cut)
            if ctx.state != "finished":
                relay.outcome.status = relay.outcome.status or 200
                relay._finish()


# -------------------------------------------------------------- count_tokens

def count_tokens(relay, start_response: Callable) -> list[bytes]:
    """Exact count from the first Anthropic target; the gateway's own count otherwise
    (or when that provider fails: a count is an estimate the client can live with)."""
    from .app import POOL, _Closing
    ctx = relay.ctx
    exact = None
    for target in ctx.plan:
        if target.provider.type != "anthropic":
            continue
        p = target.provider
        relay.outcome.target = target
        attempt: dict[str, Any] = {"provider": p.name, "model": target.model}
        relay.outcome.attempts.append(attempt)
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
        relay.outcome.reached_provider = True
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
    body = orjson.dumps({"input_tokens": tokens})
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("X-AI-Token-Count", "exact" if exact is not None else "estimated")]
    headers += relay._served_headers()
    relay.outcome.status = 200
    start_response("200 OK", headers)
    return _Closing(body, relay._finish)


def relay_summary(data: bytes) -> str:
    from ..providers.base import summarize_error
    return summarize_error(400, data)[:200]
