"""The terminal step of a routed request: call the provider targets in failover order.

ai-router's stage offers this step (``ctx.provide``); the engine calls ``answer`` once
the request side is complete. An attempt that fails before any byte reached the client
moves on to the next target (circuit breaker counted); once a target answers, its
answer is handed back to the engine: a complete canonical response (``ex.response``,
``ex.usage``) or a stream source of canonical chunks. The output cap reserved by the
limit stages (``ctx.output_cap``, aigw/relay/output_cap.py) is applied here, where the
answer is read, so every stage sees only what the client receives.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import gevent
import urllib3

from .. import cloud_auth
from ..cache import assemble_stream
from ..context import Outcome, RequestContext
from ..errors import GatewayError
from ..logs import log_failure
from ..pipeline import Exchange, StreamBroken, counted_usage, with_prompt
from ..providers import get_adapter
from ..providers.base import StreamDecoder, UpstreamStreamError, request_error_status, stream_error
from ..providers.openai_responses import OpenAIResponsesAdapter
from ..routing import Target
from ..types import ProviderConfig, Usage
from . import native
from .failover import AttemptAdapter, Retryable, SentAndFailed, read_all, safe_summary
from .native import NativeStream
from .output_cap import StreamCap, answer_tokens, cap_response, delivered_usage, upstream_body
from .upstream import SendFailed, discard, finish, send

if TYPE_CHECKING:  # the engine imports the stages that reach this module
    from .app import Engine

log = logging.getLogger("aigw")

_HEAD_KEEP = 8192


class ProviderCall:
    """The provider call of one ai-router instance (its breaker, failover statuses and the
    plugins it requires to have completed)."""

    def __init__(self, breaker: Any, failover_status: set[int], required: frozenset[str]):
        self.breaker = breaker
        self.failover_status = failover_status
        self.required = required

    def check(self, ctx: RequestContext) -> None:
        if not self.required <= ctx.done:
            # a plugin the router requires never ran (Kong skips a plugin whose event
            # failed): fail closed
            raise GatewayError(503, "The gateway could not complete its checks for this request; "
                                    "it was not sent to any model.", code="gateway_incomplete")

    def answer(self, engine: Engine, ex: Exchange) -> ProviderStream | NativeStream | None:
        if engine.ctx.api == "count_tokens":
            native.count_tokens(engine, ex)  # fills ex: no stream
            return None
        return Attempts(self, engine, ex).run()


class Attempts:
    """The failover loop over ``ctx.plan`` for one request."""

    def __init__(self, call: ProviderCall, engine: Engine, ex: Exchange):
        self.call = call
        self.engine = engine
        self.ctx: RequestContext = engine.ctx
        self.ex = ex
        self.outcome = ex.outcome

    def run(self) -> ProviderStream | NativeStream | None:
        ctx = self.ctx
        breaker = self.call.breaker
        last: Retryable | None = None
        for target in ctx.plan:
            adapter: AttemptAdapter = native.upstream_adapter(ctx, target) or get_adapter(target.provider.type)
            attempt: dict[str, Any] = {"provider": target.provider.name, "model": target.model}
            self.outcome.attempts.append(attempt)
            self.outcome.target = target
            try:
                result = self._attempt(adapter, target, attempt)
            except Retryable as r:
                attempt.update(result=r.kind, status=r.status)
                self.engine.trace.attempt_failed(r.kind, r.status)
                if breaker is not None:
                    breaker.record_failure(target.key)
                last = r
                continue
            except SentAndFailed:
                attempt.update(result="sent_failed")
                if breaker is not None:
                    breaker.record_failure(target.key)
                self.outcome.error = "upstream_failed"
                raise GatewayError(
                    502, f"Provider '{target.provider.name}' received the request but the "
                         "connection failed before an answer; it was not retried, so it is "
                         "never sent twice.", code="upstream_failed") from None
            if breaker is not None:
                breaker.record_success(target.key)
            return result
        raise self._exhausted(last)

    def _exhausted(self, last: Retryable | None) -> GatewayError:
        n = len(self.outcome.attempts)
        if last is None:
            return GatewayError(503, "No provider target is available for this model.",
                                code="no_target")
        tgt = self.outcome.attempts[-1]["provider"]
        detail = {"connect": "connection failed", "timeout": "timed out",
                  "first_token_timeout": "first token did not arrive in time",
                  "protocol": "sent an invalid response",
                  "empty": "sent a stream with no output",
                  "credentials": "could not be authenticated"}.get(last.kind, f"answered {last.status}")
        msg = f"All {n} upstream attempt(s) failed; last: provider '{tgt}' {detail}"
        if last.summary:
            msg += f": {last.summary}"
        self.outcome.error = "upstream_failed"
        if last.kind in ("timeout", "first_token_timeout"):
            return GatewayError(504, msg, code="upstream_timeout")
        if last.status in (429, 503):
            headers = {"Retry-After": "1"} if last.status == 429 else {}
            return GatewayError(503, msg, code="upstream_unavailable", headers=headers)
        return GatewayError(502, msg, code="upstream_failed")

    def _attempt(self, adapter: AttemptAdapter, target: Target,
                 attempt: dict[str, Any]) -> ProviderStream | NativeStream | None:
        ctx = self.ctx
        p = target.provider
        same_api = native.passes_through(ctx, target)  # Anthropic -> Anthropic: the client's own body
        if same_api:
            up = native.request(ctx, target)
        elif ctx.api == "embeddings":
            # upstream_adapter gives the (chat-only) Responses adapter to Responses clients only
            assert not isinstance(adapter, OpenAIResponsesAdapter)
            up = adapter.embeddings_request(ctx.canonical or {}, target.model, p)
        else:
            up = adapter.chat_request(upstream_body(ctx.canonical or {}, ctx.output_cap, adapter),
                                      target.model, p, stream=ctx.stream)
        self.engine.trace.provider_call(target, up)
        try:
            up = cloud_auth.authorize(p, up)  # SigV4 / OAuth token for bedrock and vertex
        except cloud_auth.CredentialsError as exc:
            raise Retryable("credentials", summary=str(exc)) from exc
        try:
            resp = send(up.method, up.url, up.body, up.headers, p.connect_timeout, p.first_byte_timeout)
        except SendFailed as f:
            if f.kind == "sent":
                self.outcome.reached_provider = True
                raise SentAndFailed() from None
            if f.kind == "timeout":  # no answer within first_byte: the configured failover
                self.outcome.reached_provider = True
            raise Retryable(f.kind) from None
        self.outcome.reached_provider = True
        if resp.status >= 400:
            try:
                data = read_all(resp, p.total_timeout)
            except gevent.Timeout:
                discard(resp)
                data = b""
            except (urllib3.exceptions.HTTPError, OSError):
                data = b""
            summary = safe_summary(adapter, resp.status, data)
            provider_error(self.outcome, p, attempt, resp.status, data, summary, self.call.failover_status)
        if same_api:
            return native.answer(self.engine, self.ex, adapter, target, attempt, resp)
        if ctx.stream and ctx.api != "embeddings":
            return self._stream(adapter, target, attempt, resp)
        try:
            data = read_all(resp, p.total_timeout)
        except gevent.Timeout:
            discard(resp)
            raise Retryable("timeout") from None
        except (urllib3.exceptions.HTTPError, OSError):
            raise SentAndFailed() from None  # the answer broke off: the provider had it
        try:
            if ctx.api == "embeddings":
                assert not isinstance(adapter, OpenAIResponsesAdapter)  # as above
                out = adapter.embeddings_response(data, target.model)
            else:
                out = adapter.chat_response(data, target.model)
        except Exception:
            raise Retryable("protocol") from None
        attempt["result"] = "ok"
        self._complete(out, target)
        return None

    def _complete(self, resp: dict[str, Any], target: Target) -> None:
        """A whole canonical answer: its usage (the provider's, else ours), the output cap."""
        ctx = self.ctx
        reported = Usage.from_openai(resp.get("usage"))
        counted = reported is None or (reported.input_tokens == 0 and reported.output_tokens == 0
                                       and ctx.api != "embeddings")
        usage = counted_usage(ctx, target.model, response_text(resp)) if counted or reported is None \
            else reported
        usage = with_prompt(ctx, usage)
        cut = False
        if ctx.api != "embeddings":
            usage, cut = self._cap_answer(resp, usage, target, counted)
        # a stage that keeps the answer (ai-cache) gets it before any rewrite; never a cut one
        self.outcome.response = copy.deepcopy(resp) if self.ex.keep_answer and not cut else None
        if usage.estimated and ctx.api != "embeddings":
            resp["usage"] = {**usage.to_openai(), "estimated": True}  # our count, marked as in streams
        self.ex.response = resp
        self.ex.usage = usage

    def _cap_answer(self, resp: dict[str, Any], usage: Usage, target: Target,
                    counted: bool) -> tuple[Usage, bool]:
        """Output cap on a non-streaming answer: cut choices that exceed the reserved output;
        a cut answer is charged what was delivered."""
        cap = self.ctx.output_cap
        if not counted and cap and usage.output_tokens <= cap:
            # the provider's own count is within what was reserved for one choice, so no choice
            # went past the cap: nothing to cut and nothing to recount. The usual case, since
            # providers honour the max output the relay sends (output_cap.upstream_body).
            return usage, False
        out_tokens = cap_response(resp, cap, target.model)
        if out_tokens is None:
            if counted:  # our count of the output: per choice, within the cap
                usage = dataclasses.replace(usage, output_tokens=answer_tokens(resp, self.ctx.output_cap,
                                                                               target.model))
            return usage, False
        ours = dataclasses.replace(counted_usage(self.ctx, target.model, ""), output_tokens=out_tokens)
        delivered = delivered_usage(None if usage.estimated else usage, ours)
        resp["usage"] = delivered.to_openai()
        return delivered, True

    # ---------------------------------------------------------------- stream
    def _stream(self, adapter: AttemptAdapter, target: Target, attempt: dict[str, Any],
                resp: urllib3.BaseHTTPResponse) -> ProviderStream:
        """Wait for the first token (failover is still possible), then hand the stream over."""
        p = target.provider
        decoder = adapter.chat_stream(target.model)
        first: list[dict[str, Any]] = []
        head = bytearray()  # the raw bytes before the first token (bounded), to explain an empty stream
        try:
            with gevent.Timeout(p.first_byte_timeout):
                while not any(_has_token(c) for c in first) and not decoder.done:
                    raw = resp.read1(65536)
                    if not raw:
                        first.extend(decoder.close())
                        break
                    if len(head) < _HEAD_KEEP:
                        head += raw[: _HEAD_KEEP - len(head)]
                    first.extend(decoder.feed(raw))
        except gevent.Timeout:
            discard(resp)
            raise Retryable("first_token_timeout") from None
        except UpstreamStreamError as e:  # an error event before any output
            discard(resp)
            found = stream_error(bytes(head))
            provider_error(self.outcome, p, attempt, found[0] if found else 502, b"",
                           found[1] if found else e.message, set(range(500, 600)))
        except (urllib3.exceptions.HTTPError, OSError):
            discard(resp)
            raise SentAndFailed() from None  # the provider had the request: no second send
        except Exception:
            discard(resp)
            raise Retryable("protocol") from None
        if not any(_has_token(c) for c in first):
            # the stream ended ([DONE] or EOF) and produced nothing: no token, no finish reason
            finish(resp, decoder.done)
            found = stream_error(bytes(head))  # e.g. llama.cpp's "error: {...}" SSE line
            if found is not None:
                provider_error(self.outcome, p, attempt, found[0], b"", found[1], set(range(500, 600)))
            raise Retryable("empty")
        self.outcome.ttft = time.perf_counter() - self.engine.t0
        attempt["result"] = "ok"
        return ProviderStream(self.ctx, self.ex, target, first, decoder, resp)


def provider_error(outcome: Outcome, p: ProviderConfig, attempt: dict[str, Any], status: int,
                   data: bytes, summary: str, failover_status: set[int]) -> NoReturn:
    """A provider's error answer: raises Retryable (try the next target) or GatewayError.

    An error the request itself caused (a 4xx such as 400/404/413/422, or a 5xx or
    stream error event whose body says it is a validation error) is relayed with the
    provider's status and message: it is not retried (another target would refuse it
    too) and not counted against the circuit breaker (the provider is healthy)."""
    caused = request_error_status(status, data)
    if caused is None and status in failover_status:
        raise Retryable("status", status, summary)
    outcome.error = "provider_error"
    attempt.update(result="error", status=status)
    if caused is not None:
        out = caused
    elif status in (401, 403, 407):
        out = 502  # the gateway's own provider credentials were refused: not the client's fault
    else:
        out = status if 400 <= status <= 599 else 502
    raise GatewayError(out, f"Provider '{p.name}' rejected the request ({status}): {summary}",
                       code="provider_error")


class ChunkAccount:
    """What the engine needs of any canonical chunk stream: the provider's usage chunk taken
    out, the text kept for our own count, a copy for a stage that keeps the answer."""

    def __init__(self, ctx: RequestContext, model: str, keep: bool):
        self.ctx = ctx
        self.model = model
        self.keep = keep
        self.provider_usage: Usage | None = None
        self.text: list[str] = []
        self.raw: list[dict[str, Any]] = []

    def take(self, c: dict[str, Any]) -> bool:
        """False for the provider's usage-only chunk (not relayed as such)."""
        if "usage" in c and c.get("usage") and not c.get("choices"):
            self.provider_usage = Usage.from_openai(c["usage"])
            return False
        if self.keep:
            self.raw.append(copy.deepcopy(c))
        for ch in c.get("choices") or ():
            delta = ch.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.text.append(text)
            for tc in delta.get("tool_calls") or ():
                args = (tc.get("function") or {}).get("arguments")
                if isinstance(args, str) and args:
                    self.text.append(args)
        return True

    def counted(self) -> Usage:
        return with_prompt(self.ctx, self.provider_usage or counted_usage(self.ctx, self.model,
                                                                          "".join(self.text)))


class ProviderStream:
    """A provider's canonical chunks after the first token: read, decoded, capped."""

    def __init__(self, ctx: RequestContext, ex: Exchange, target: Target, first: list[dict[str, Any]],
                 decoder: StreamDecoder, resp: urllib3.BaseHTTPResponse):
        self.ctx = ctx
        self.ex = ex
        self.target = target
        self.first = first
        self.decoder = decoder
        self.resp = resp
        self.account = ChunkAccount(ctx, target.model, ex.keep_answer)
        # output count per choice and cap (aigw/relay/output_cap.py)
        self.cap = StreamCap.for_request(ctx, target.model)
        self.ok = False
        self.closed = False

    def _capped(self, chunks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for c in (chunks if self.cap is None else self.cap.feed(chunks)):
            if self.account.take(c):
                yield c

    def items(self) -> Iterator[dict[str, Any]]:
        decoder, resp, cap = self.decoder, self.resp, self.cap
        try:
            yield from self._capped(self.first)
            with gevent.Timeout(self.target.provider.total_timeout):
                while not decoder.done and not (cap is not None and cap.exhausted):
                    raw = resp.read1(65536)
                    if not raw:
                        yield from self._capped(decoder.close())
                        break
                    yield from self._capped(decoder.feed(raw))
        except gevent.Timeout:
            raise StreamBroken("The provider stream timed out.", "stream_timeout") from None
        except GeneratorExit:
            raise
        except StreamBroken:
            raise
        except Exception as exc:
            log_failure("relay", "stream", exc)
            raise StreamBroken("The provider stream ended unexpectedly.", "stream_broken") from None
        self.ok = decoder.done
        if decoder.usage is not None:
            self.account.provider_usage = decoder.usage
        self.ex.complete = self.ok
        if self.ok and self.account.raw:
            try:
                self.ex.outcome.response = assemble_stream(self.account.raw)
            except Exception:
                self.ex.outcome.response = None

    def usage(self) -> Usage:
        """The provider's usage if it came, else our count of what was streamed."""
        cap, account = self.cap, self.account
        if cap is not None and (cap.cut or account.provider_usage is None):
            # our count, per choice and within the cap: a cut answer is charged what was
            # delivered, and so is a stream without provider usage (aigw/relay/output_cap.py)
            counted = dataclasses.replace(counted_usage(self.ctx, self.target.model, ""),
                                          output_tokens=cap.delivered_tokens())
            return with_prompt(self.ctx, delivered_usage(account.provider_usage if cap.cut else None, counted))
        return account.counted()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            finish(self.resp, self.ok)


def _has_token(c: dict[str, Any]) -> bool:
    for ch in c.get("choices") or ():
        d = ch.get("delta") or {}
        if d.get("content") or d.get("tool_calls") or ch.get("finish_reason"):
            return True
    return False


def response_text(resp: dict[str, Any]) -> str:
    parts = []
    for ch in resp.get("choices") or ():
        msg = ch.get("message") or {}
        if isinstance(msg.get("content"), str):
            parts.append(msg["content"])
        for tc in msg.get("tool_calls") or ():
            parts.append((tc.get("function") or {}).get("arguments") or "")
    return "".join(parts)
