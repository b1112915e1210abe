"""The relay's WSGI application: provider calls, failover, streaming, decoration.

Kong proxies to this app with the request's ticket; ``STORE.claim`` turns the
ticket into the context built in the access phase (one use only).  Anything
without a valid ticket gets 403 and never reaches a provider.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import time
from typing import Any, Callable, Generator, Iterable, Iterator

import gevent
import orjson
import urllib3

from .. import cloud_auth, sse, tracing
from ..context import STORE, Outcome, RequestContext, set_observer
from ..gateway import limits
from ..errors import ANTHROPIC, OPENAI, GatewayError, error_body
from ..routing import default_retry_statuses
from ..types import Usage
from ..gateway.common import Respond
from ..plugin_base import log_failure
from .intake import admit, read_body
from .observe import observe
from .upstream import POOL, SendFailed, discard, finish, send  # noqa: F401 (POOL: tests)
from .output_cap import StreamCap, upstream_body

log = logging.getLogger("aigw")

_REASONS = {200: "OK", 400: "Bad Request", 402: "Payment Required", 403: "Forbidden",
            404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}

set_observer(observe)


# cache statuses after which ai-cache stores the answer (Bypass and Hit store nothing)
_STORES_ANSWER = ("Miss", "Refresh")


def _status_line(code: int) -> str:
    return f"{code} {_REASONS.get(code, 'Status')}"


class Retryable(Exception):
    """A target failed before any byte reached the client: try the next one."""

    def __init__(self, kind: str, status: int | None = None, summary: str = ""):
        super().__init__(kind)
        self.kind = kind          # connect | timeout | first_token_timeout | status | protocol | empty
        self.status = status
        self.summary = summary


class SentAndFailed(Exception):
    """The request left for the provider and then the exchange failed: the provider may
    have processed it, so no other target is tried (that could send it twice)."""


def application(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    ctx = STORE.claim(environ.get("HTTP_X_AIGW_TICKET"))
    if ctx is None:
        read_body(environ, 0)
        body = orjson.dumps(error_body(OPENAI, 403, "Forbidden: the relay serves only requests "
                                                    "authorised by the gateway (is ai-router enabled "
                                                    "on this route?).", "relay_forbidden"))
        start_response(_status_line(403), [("Content-Type", "application/json"),
                                           ("Content-Length", str(len(body)))])
        return [body]
    try:
        admit(ctx, environ)
    except Respond as r:
        relay = Relay(ctx, environ)
        relay.outcome.status = r.status
        start_response(_status_line(r.status), [*r.headers.items(), ("Content-Length", str(len(r.body)))])
        return _Closing(r.body, relay._finish)
    except GatewayError as err:
        return Relay(ctx, environ)._error(start_response, err)
    except Exception as exc:
        log_failure("relay", "request", exc)
        return Relay(ctx, environ)._error(start_response, GatewayError(
            500, "The gateway could not process this request; it was not sent to any model.",
            code="gateway_error"))
    return Relay(ctx, environ).run(start_response)


class Relay:
    def __init__(self, ctx: RequestContext, environ: dict[str, Any] | None = None):
        self.ctx = ctx
        self.outcome = Outcome(cache_status=ctx.cache_status)
        self.t0 = time.perf_counter()
        self.trace = tracing.begin(ctx, environ)  # spans, traceparent (aigw/tracing.py)

    @property
    def api(self) -> str:
        """The client's API format (known once the intake has read the path)."""
        return ANTHROPIC if self.ctx.api in ("anthropic", "count_tokens") else OPENAI

    # ------------------------------------------------------------------ entry
    def run(self, start_response: Callable) -> Iterable[bytes]:
        ctx = self.ctx
        try:
            required = ctx.router.required_plugins if ctx.router is not None else frozenset()
            if ctx.pending or not required <= ctx.done:
                # a plugin's access phase did not complete, or a plugin the router requires
                # never ran (Kong skips a plugin whose event failed): fail closed
                raise GatewayError(503, "The gateway could not complete its checks for this request; "
                                        "it was not sent to any model.", code="gateway_incomplete")
            limits.commit(ctx)  # the request's reservations, in one store call (aigw/gateway/limits.py)
            if ctx.cache_entry is not None:
                return self._replay(start_response)
            if ctx.api == "count_tokens":
                from .native import count_tokens
                return count_tokens(self, start_response)
            return self._call_targets(start_response)
        except GatewayError as err:
            return self._error(start_response, err)
        except Exception as exc:
            log_failure("relay", "response", exc)
            return self._error(start_response, GatewayError(
                500, "The gateway failed while relaying this request.", code="gateway_error"))

    def _error(self, start_response: Callable, err: GatewayError) -> list[bytes]:
        body = err.encode(self.api)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers += self._served_headers()
        headers += list(err.headers.items())
        self.outcome.status = err.status
        self.outcome.error = self.outcome.error or err.code or "error"
        start_response(_status_line(err.status), headers)
        return _Closing(body, self._finish)

    def _finish(self) -> None:
        self.outcome.duration = time.perf_counter() - self.t0
        self.trace.finish(self.ctx, self.outcome)
        self.ctx.finish(self.outcome)

    # -------------------------------------------------------------- upstreams
    def _call_targets(self, start_response: Callable) -> Iterable[bytes]:
        from ..providers import get_adapter
        ctx = self.ctx
        router = ctx.router
        breaker = router.breaker if router is not None else None
        failover_status = router.failover_status if router is not None else default_retry_statuses()
        last: Retryable | None = None
        from .native import upstream_adapter
        for target in ctx.plan:
            adapter = upstream_adapter(ctx, target) or get_adapter(target.provider.type)
            attempt: dict[str, Any] = {"provider": target.provider.name, "model": target.model}
            self.outcome.attempts.append(attempt)
            self.outcome.target = target
            try:
                result = self._attempt(adapter, target, attempt, failover_status, start_response)
            except Retryable as r:
                attempt.update(result=r.kind, status=r.status)
                self.trace.attempt_failed(r.kind, r.status)
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
                         "never sent twice.", code="upstream_failed")
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

    def _attempt(self, adapter, target, attempt: dict[str, Any], failover_status: set[int],
                 start_response: Callable) -> Iterable[bytes]:
        ctx = self.ctx
        p = target.provider
        from . import native
        same_api = native.passes_through(ctx, target)  # Anthropic -> Anthropic: the client's own body
        if same_api:
            up = native.request(ctx, target)
        elif ctx.api == "embeddings":
            up = adapter.embeddings_request(ctx.canonical, target.model, p)
        else:
            up = adapter.chat_request(upstream_body(ctx.canonical, ctx.output_cap, adapter),
                                      target.model, p, stream=ctx.stream)
        self.trace.provider_call(target, up)
        try:
            up = cloud_auth.authorize(p, up)  # SigV4 / OAuth token for bedrock and vertex
        except cloud_auth.CredentialsError as exc:
            raise Retryable("credentials", summary=str(exc))
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
                data = _read_all(resp, p.total_timeout)
            except gevent.Timeout:
                discard(resp)
                data = b""
            except (urllib3.exceptions.HTTPError, OSError):
                data = b""
            summary = _safe_summary(adapter, resp.status, data)
            self._provider_error(p, attempt, resp.status, data, summary, failover_status)
        if same_api:
            return native.answer(self, adapter, target, attempt, resp, start_response)
        if ctx.stream and ctx.api != "embeddings":
            return self._stream(adapter, target, attempt, resp, start_response)
        try:
            data = _read_all(resp, p.total_timeout)
        except gevent.Timeout:
            discard(resp)
            raise Retryable("timeout")
        except (urllib3.exceptions.HTTPError, OSError):
            raise SentAndFailed() from None  # the answer broke off: the provider had it
        try:
            if ctx.api == "embeddings":
                out = adapter.embeddings_response(data, target.model)
            else:
                out = adapter.chat_response(data, target.model)
        except Exception:
            raise Retryable("protocol")
        attempt["result"] = "ok"
        return self._respond(start_response, out, target)

    def _provider_error(self, p, attempt: dict[str, Any], status: int, data: bytes, summary: str,
                        failover_status: set[int]) -> None:
        """A provider's error answer: raises Retryable (try the next target) or GatewayError.

        An error the request itself caused (a 4xx such as 400/404/413/422, or a 5xx or
        stream error event whose body says it is a validation error) is relayed with the
        provider's status and message: it is not retried (another target would refuse it
        too) and not counted against the circuit breaker (the provider is healthy)."""
        from ..providers.base import request_error_status
        caused = request_error_status(status, data)
        if caused is None and status in failover_status:
            raise Retryable("status", status, summary)
        self.outcome.error = "provider_error"
        attempt.update(result="error", status=status)
        if caused is not None:
            out = caused
        elif status in (401, 403, 407):
            out = 502  # the gateway's own provider credentials were refused: not the client's fault
        else:
            out = status if 400 <= status <= 599 else 502
        raise GatewayError(out, f"Provider '{p.name}' rejected the request ({status}): {summary}",
                           code="provider_error")

    # ------------------------------------------------------------ non-stream
    def _respond(self, start_response: Callable, resp: dict[str, Any], target,
                 cached: bool = False) -> list[bytes]:
        ctx = self.ctx
        usage = Usage.from_openai(resp.get("usage"))
        counted = usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0 and ctx.api != "embeddings")
        if counted:
            usage = self._counted_usage(_response_text(resp))
        usage = self._with_prompt(usage)
        cut = False
        if not cached and ctx.api != "embeddings" and target is not None:
            usage, cut = self._cap_answer(resp, usage, target, counted)
        if not cached:
            # only ai-cache (on a miss or refresh) keeps the un-restored answer; never a cut one
            self.outcome.response = (copy.deepcopy(resp) if ctx.cache_status in _STORES_ANSWER
                                     and not cut else None)
        if ctx.restore_map and ctx.api != "embeddings":
            _restore_response(resp, ctx.restore_map)
        if usage.estimated and ctx.api != "embeddings":
            resp["usage"] = {**usage.to_openai(), "estimated": True}  # our count, marked as in streams
        self.outcome.usage = usage
        self.outcome.status = 200
        cost = 0.0 if cached else self._cost(usage, target)
        self.outcome.cost_usd = cost
        if ctx.api == "responses":
            from ..gateway.responses import answer
            body = orjson.dumps(answer(ctx, resp, usage))
        elif self.api == ANTHROPIC:
            from ..ingress.anthropic import from_openai_response
            body = orjson.dumps(from_openai_response(resp, ctx.model.name if ctx.model else resp.get("model", "")))
        else:
            body = orjson.dumps(resp)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers += self._served_headers()
        headers += self._usage_headers(usage, cost, cached)
        start_response("200 OK", headers)
        return _Closing(body, self._finish)

    # ---------------------------------------------------------------- stream
    def _stream(self, adapter, target, attempt: dict[str, Any], resp,
                start_response: Callable) -> Iterator[bytes]:
        """Wait for the first token (failover is still possible), then stream."""
        from ..providers.base import UpstreamStreamError, stream_error
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
            raise Retryable("first_token_timeout")
        except UpstreamStreamError as e:  # an error event before any output
            discard(resp)
            found = stream_error(bytes(head))
            self._provider_error(p, attempt, found[0] if found else 502, b"",
                                 found[1] if found else e.message, set(range(500, 600)))
        except (urllib3.exceptions.HTTPError, OSError):
            discard(resp)
            raise SentAndFailed() from None  # the provider had the request: no second send
        except Exception:
            discard(resp)
            raise Retryable("protocol")
        if not any(_has_token(c) for c in first):
            # the stream ended ([DONE] or EOF) and produced nothing: no token, no finish reason
            finish(resp, decoder.done)
            found = stream_error(bytes(head))  # e.g. llama.cpp's "error: {...}" SSE line
            if found is not None:
                self._provider_error(p, attempt, found[0], b"", found[1], set(range(500, 600)))
            raise Retryable("empty")
        self.outcome.ttft = time.perf_counter() - self.t0
        attempt["result"] = "ok"
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        headers += self._served_headers()
        start_response("200 OK", headers)
        return _Stream(self._stream_body(first, decoder, resp, target), resp, self)

    def _stream_body(self, first: list[dict[str, Any]], decoder, resp, target) -> Iterator[bytes]:
        ctx = self.ctx
        out = StreamOut(self, target)
        # output count per choice and cap (aigw/relay/output_cap.py); None only for embeddings
        cap = out.cap = StreamCap.for_request(ctx, target.model)
        ok = False
        try:
            for c in _capped(cap, first):
                yield from out.chunk(c)
            deadline = target.provider.total_timeout
            with gevent.Timeout(deadline):
                while not decoder.done and not (cap is not None and cap.exhausted):
                    raw = resp.read1(65536)
                    if not raw:
                        for c in _capped(cap, decoder.close()):
                            yield from out.chunk(c)
                        break
                    for c in _capped(cap, decoder.feed(raw)):
                        yield from out.chunk(c)
            ok = decoder.done
            if decoder.usage is not None:
                out.provider_usage = decoder.usage
            yield from out.end(ok)
        except gevent.Timeout:
            self.outcome.error = "stream_timeout"
            yield from out.abort("The provider stream timed out.")
        except GeneratorExit:  # client went away: charge what the provider produced so far
            self.outcome.error = self.outcome.error or "client_disconnected"
            out.settle()
            self.outcome.status = 499
            raise
        except Exception as exc:
            log_failure("relay", "stream", exc)
            self.outcome.error = "stream_broken"
            yield from out.abort("The provider stream ended unexpectedly.")
        finally:
            finish(resp, ok)
            if ctx.state != "finished":
                self.outcome.status = self.outcome.status or 200
                self._finish()

    # ------------------------------------------------------------------ cache
    def _replay(self, start_response: Callable) -> Iterable[bytes]:
        from ..cache import replay_stream
        ctx = self.ctx
        entry = ctx.cache_entry
        self.outcome.cache_status = "Hit"
        target = ctx.plan[0] if ctx.plan else None
        self.outcome.target = target
        if not ctx.stream:
            resp = copy.deepcopy(entry.response)
            if resp.get("usage") is None and entry.usage:
                resp["usage"] = dict(entry.usage)  # a streamed miss keeps its usage beside the answer
            return self._respond(start_response, resp, target, cached=True)
        self.outcome.ttft = time.perf_counter() - self.t0
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        headers += self._served_headers()
        known = Usage.from_openai(entry.response.get("usage") or entry.usage)
        if known is not None:  # a replay knows its usage before the first byte
            headers += self._usage_headers(known, 0.0, True)
        start_response("200 OK", headers)

        def body() -> Iterator[bytes]:
            out = StreamOut(self, target, cached=True)
            try:
                for c in replay_stream(entry):
                    if "usage" in c and not c.get("choices"):
                        out.provider_usage = Usage.from_openai(c["usage"])
                        continue
                    yield from out.chunk(c)
                yield from out.end(True)
                self.outcome.status = 200
            except GeneratorExit:  # the client went away mid-replay
                self.outcome.status = 499
                self.outcome.error = self.outcome.error or "client_disconnected"
                raise
            finally:
                if ctx.state != "finished":  # a claimed context is never swept: finish it here
                    self.outcome.status = self.outcome.status or 200
                    self._finish()
        return _Stream(body(), None, self)

    # ------------------------------------------------------------- decoration
    def _served_headers(self) -> list[tuple[str, str]]:
        ctx = self.ctx
        h: list[tuple[str, str]] = []
        t = self.outcome.target
        if t is not None:
            h.append(("X-AI-Model", t.model))
            h.append(("X-AI-Provider", t.provider.name))
            if t.variant:
                h.append(("X-AI-Variant", t.variant))
        if self.outcome.attempts:
            h.append(("X-AI-Attempts", str(len(self.outcome.attempts))))
            h.append(("X-AI-Attempt-Log", ", ".join(
                f"{a['provider']}/{a['model']}={a.get('result', '?')}"
                + (f":{a['status']}" if a.get("status") else "") for a in self.outcome.attempts)))
        h += list(ctx.extra_headers.items())
        return h

    def _usage_headers(self, usage: Usage, cost: float | None, cached: bool) -> list[tuple[str, str]]:
        ctx = self.ctx
        h: list[tuple[str, str]] = []
        if ctx.token_headers:
            h += [("X-AI-Prompt-Tokens", str(usage.input_tokens)),
                  ("X-AI-Completion-Tokens", str(usage.output_tokens)),
                  ("X-AI-Total-Tokens", str(usage.total_tokens))]
            if usage.cache_read_tokens:
                h.append(("X-AI-Cached-Tokens", str(usage.cache_read_tokens)))
            if usage.estimated:
                h.append(("X-AI-Tokens-Estimated", "true"))  # same marker as usage.estimated in bodies
            if cached:
                h.append(("X-AI-Tokens-Cached", "true"))
        if ctx.cost_fn is not None and ctx.cost_headers and cost is not None:
            h.append(("X-AI-Cost-USD", f"{cost:.8f}".rstrip("0").rstrip(".") if cost else "0"))
        return h

    def _cost(self, usage: Usage, target) -> float | None:
        if self.ctx.cost_fn is None or target is None:
            return None
        return self.ctx.cost_fn(usage, target)

    def _counted_usage(self, completion_text: str) -> Usage:
        """Usage when the provider reported none: our own counts, flagged estimated."""
        from ..tokens.counting import count_completion_text
        ctx = self.ctx
        model = self.outcome.target.model if self.outcome.target is not None else ""
        prompt = ctx.prompt_count.tokens if ctx.prompt_count is not None else 0
        out = count_completion_text(completion_text, model).tokens if completion_text else 0
        return Usage(input_tokens=prompt, output_tokens=out, estimated=True)

    def _cap_answer(self, resp: dict[str, Any], usage: Usage, target, counted: bool) -> tuple[Usage, bool]:
        """Output cap on a non-streaming answer (aigw/relay/output_cap.py): cut choices that
        exceed the reserved output; a cut answer is charged what was delivered."""
        from .output_cap import cap_response, delivered_usage
        out_tokens = cap_response(resp, self.ctx.output_cap, target.model)
        if out_tokens is None:
            if counted:  # our count of the output: per choice, within the cap
                from .output_cap import answer_tokens
                usage = dataclasses.replace(usage, output_tokens=answer_tokens(resp, self.ctx.output_cap,
                                                                               target.model))
            return usage, False
        ours = dataclasses.replace(self._counted_usage(""), output_tokens=out_tokens)
        delivered = delivered_usage(None if usage.estimated else usage, ours)
        resp["usage"] = delivered.to_openai()
        return delivered, True

    def _with_prompt(self, usage: Usage) -> Usage:
        """A provider that reported output but no prompt tokens: our prompt count, flagged estimated."""
        pc = self.ctx.prompt_count
        if usage.input_tokens or pc is None or not pc.tokens:
            return usage
        return dataclasses.replace(usage, input_tokens=pc.tokens, estimated=True)


class StreamOut:
    """Turns canonical chunks into the client's stream: restore, usage, cost, egress."""

    def __init__(self, relay: Relay, target, cached: bool = False):
        self.relay = relay
        self.ctx = relay.ctx
        self.target = target
        self.cached = cached
        self.provider_usage: Usage | None = None
        self.cap: StreamCap | None = None  # per-choice output count and cap (set by the stream loop)
        self.text: list[str] = []
        self.raw_chunks: list[dict[str, Any]] = []  # un-restored, for the cache
        self.restorers: dict[tuple, Any] = {}
        self.template: dict[str, Any] = {}
        self.encoder = None
        if self.ctx.api == "responses":
            from ..gateway.responses import encoder
            self.encoder = encoder(self.ctx)
        elif relay.api == ANTHROPIC:
            from ..ingress.anthropic import StreamEncoder
            pc = self.ctx.prompt_count.tokens if self.ctx.prompt_count is not None else None
            self.encoder = StreamEncoder(self.ctx.model.name if self.ctx.model else "", pc)

    def _restorer(self, key: tuple):
        r = self.restorers.get(key)
        if r is None:
            from ..redact.restore import StreamRestorer
            m = self.ctx.restore_map if key[1] == "c" else _json_escaped(self.ctx.restore_map)
            r = self.restorers[key] = StreamRestorer(m)
        return r

    def chunk(self, c: dict[str, Any]) -> Iterator[bytes]:
        if "usage" in c and c.get("usage") and not c.get("choices"):
            self.provider_usage = Usage.from_openai(c["usage"])
            return
        if not self.template:
            self.template = {k: c.get(k) for k in ("id", "object", "created", "model")}
        if not self.cached and self.ctx.cache_status in _STORES_ANSWER:
            self.raw_chunks.append(copy.deepcopy(c))
        for ch in c.get("choices") or ():
            delta = ch.get("delta") or {}
            idx = ch.get("index", 0)
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.text.append(text)
                if self.ctx.restore_map:
                    delta["content"] = self._restorer((idx, "c")).feed(text)
            for tc in delta.get("tool_calls") or ():
                fn = tc.get("function") or {}
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    self.text.append(args)
                    if self.ctx.restore_map:
                        fn["arguments"] = self._restorer((idx, "t", tc.get("index", 0))).feed(args)
            if ch.get("finish_reason") and self.ctx.restore_map:
                for tail in self._flush(idx):
                    yield self._emit(tail)
        yield self._emit(c)

    def _flush(self, idx: int | None = None) -> list[dict[str, Any]]:
        """Chunks carrying the text restorers still hold (content and tool arguments)."""
        out = []
        for key in sorted(k for k in self.restorers if idx is None or k[0] == idx):
            tail = self.restorers.pop(key).flush()
            if not tail:
                continue
            if key[1] == "c":
                delta: dict[str, Any] = {"content": tail}
            else:
                delta = {"tool_calls": [{"index": key[2], "function": {"arguments": tail}}]}
            out.append({**self.template, "choices": [{"index": key[0], "delta": delta, "finish_reason": None}]})
        return out

    def usage_so_far(self):
        """The provider's usage if it came, else our count of what was streamed."""
        relay = self.relay
        if self.cap is not None and (self.cap.cut or self.provider_usage is None):
            # our count, per choice and within the cap: a cut answer is charged what was
            # delivered, and so is a stream without provider usage (aigw/relay/output_cap.py)
            from .output_cap import delivered_usage
            counted = dataclasses.replace(relay._counted_usage(""), output_tokens=self.cap.delivered_tokens())
            return relay._with_prompt(delivered_usage(self.provider_usage if self.cap.cut else None, counted))
        return relay._with_prompt(self.provider_usage or relay._counted_usage("".join(self.text)))

    def settle(self) -> tuple[Any, float | None]:
        """Usage and cost of what the stream produced so far, put on the outcome: every
        way a stream ends (complete, broken, timed out, abandoned) logs and meters what
        the budget plugins charge (they charge the outcome's cost, else price its usage)."""
        relay = self.relay
        usage = self.usage_so_far()
        relay.outcome.usage = usage
        cost = 0.0 if self.cached else relay._cost(usage, self.target)
        relay.outcome.cost_usd = cost
        return usage, cost

    def _emit(self, c: dict[str, Any]) -> bytes:
        if self.encoder is not None:
            return b"".join(self.encoder.feed(c))
        return sse.encode(c)

    def end(self, complete: bool) -> Iterator[bytes]:
        ctx = self.ctx
        relay = self.relay
        # text still held back by restorers (stream ended without finish_reason)
        for tail in self._flush():
            yield self._emit(tail)
        usage, cost = self.settle()
        if complete and not self.cached and self.raw_chunks:
            from ..cache import assemble_stream
            try:
                relay.outcome.response = assemble_stream(self.raw_chunks)
            except Exception:
                relay.outcome.response = None
        if self.encoder is not None:
            yield b"".join(self.encoder.close(usage))
            return
        if ctx.include_usage:
            u = usage.to_openai()
            if usage.estimated:
                u["estimated"] = True  # the gateway's count: same marker as X-AI-Tokens-Estimated
            final: dict[str, Any] = {**self.template, "choices": [], "usage": u}
            if ctx.cost_fn is not None and ctx.cost_headers and cost is not None:
                final["cost"] = cost
                u["cost"] = cost
            if self.cached:
                final["cached"] = True
            yield sse.encode(final)
        yield sse.DONE

    def abort(self, message: str) -> Iterator[bytes]:
        """End a broken stream with an error event; what was produced is still accounted."""
        relay = self.relay
        self.settle()
        err = error_body(relay.api, 502, message, "stream_error")
        if hasattr(self.encoder, "error"):
            yield self.encoder.error(message)
        elif self.encoder is not None:
            yield sse.encode(err, event="error")
        else:
            yield sse.encode(err)


# --------------------------------------------------------------------- helpers
_HEAD_KEEP = 8192


class _Stream:
    """The WSGI body of a relayed stream.  If the server closes it before the first
    iteration (the client went away while the headers were being sent), the generator's
    own ``finally`` never runs: this closes the upstream connection and finishes the
    request (releasing its reservations) instead."""

    def __init__(self, gen: Generator[bytes, None, None], resp, relay: "Relay"):
        self.gen = gen
        self.resp = resp
        self.relay = relay

    def __iter__(self) -> Iterator[bytes]:
        return self.gen

    def close(self) -> None:
        started = inspect.getgeneratorstate(self.gen) != inspect.GEN_CREATED
        self.gen.close()
        if not started:
            discard(self.resp)
            relay = self.relay
            if relay.ctx.state != "finished":
                relay.outcome.status = 499
                relay.outcome.error = relay.outcome.error or "client_disconnected"
                relay._finish()


class _Closing:
    """A one-chunk WSGI body whose ``close`` (called by the server after the
    body was sent) runs the finish hooks, so reconciling never delays the client."""

    def __init__(self, body: bytes, on_close: Callable[[], None]):
        self.body = body
        self.on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        self.on_close()


def _capped(cap: StreamCap | None, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return chunks if cap is None else cap.feed(chunks)


def _read_all(resp, total_timeout: float) -> bytes:
    with gevent.Timeout(total_timeout):
        return resp.read()


def _safe_summary(adapter, status: int, data: bytes) -> str:
    try:
        return adapter.error_summary(status, data)[:200]
    except Exception:
        return f"HTTP {status}"


def _has_token(c: dict[str, Any]) -> bool:
    for ch in c.get("choices") or ():
        d = ch.get("delta") or {}
        if d.get("content") or d.get("tool_calls") or ch.get("finish_reason"):
            return True
    return False


def _response_text(resp: dict[str, Any]) -> str:
    parts = []
    for ch in resp.get("choices") or ():
        msg = ch.get("message") or {}
        if isinstance(msg.get("content"), str):
            parts.append(msg["content"])
        for tc in msg.get("tool_calls") or ():
            parts.append((tc.get("function") or {}).get("arguments") or "")
    return "".join(parts)


def _restore_response(resp: dict[str, Any], restore_map: dict[str, str]) -> None:
    from ..redact.restore import restore_text
    for ch in resp.get("choices") or ():
        msg = ch.get("message") or {}
        if isinstance(msg.get("content"), str):
            msg["content"] = restore_text(msg["content"], restore_map)
        for tc in msg.get("tool_calls") or ():
            fn = tc.get("function") or {}
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = restore_text(fn["arguments"], _json_escaped(restore_map))


def _json_escaped(restore_map: dict[str, str]) -> dict[str, str]:
    """Tool-call arguments are JSON: placeholders sit inside JSON strings, so the
    originals go back JSON-escaped (a private key's newlines must stay ``\\n``)."""
    return {k: orjson.dumps(v).decode()[1:-1] for k, v in restore_map.items()}
