"""The relay's WSGI application: the engine that runs a request's stages on its answer.

Kong proxies to this app with the request's ticket; ``STORE.claim`` turns the
ticket into the context built on the request side (one use only).  Anything
without a valid ticket gets 403 and never reaches a provider.

The engine knows no feature by name. It takes the request's pipeline
(``ctx.stages``, the stages whose request side ran, aigw/pipeline.py), commits the
reservations they queued, and serves the early answer a stage set (a cache hit) or
the terminal step a stage provided (ai-router's provider call). Every answer then
goes through the stages' ``headers``, ``chunk``/``flush`` and ``response`` hooks and
the client API's writer (``ctx.egress``); every request ends with the finish hooks,
exactly once, however it ended.
"""
from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse

import orjson

from .. import tracing
from ..context import STORE, Outcome, RequestContext, set_observer
from ..errors import OPENAI, GatewayError, error_body
from ..gateway import limits
from ..logs import log_failure
from ..pipeline import (
    Exchange,
    Replay,
    Respond,
    Stage,
    StreamBroken,
    counted_usage,
    response_stages,
    with_prompt,
)
from ..types import Usage
from .intake import admit, read_body
from .observe import observe
from .upstream import POOL, discard  # noqa: F401 (POOL: tests)

_REASONS = {200: "OK", 400: "Bad Request", 402: "Payment Required", 403: "Forbidden",
            404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}

set_observer(observe)


def _status_line(code: int) -> str:
    return f"{code} {_REASONS.get(code, 'Status')}"


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
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
        engine = Engine(ctx, environ)
        engine.outcome.status = r.status
        start_response(_status_line(r.status), [*r.headers.items(), ("Content-Length", str(len(r.body)))])
        return _Closing(r.body, engine._finish)
    except GatewayError as err:
        return Engine(ctx, environ)._error(start_response, err)
    except Exception as exc:
        log_failure("relay", "request", exc)
        return Engine(ctx, environ)._error(start_response, GatewayError(
            500, "The gateway could not process this request; it was not sent to any model.",
            code="gateway_error"))
    return Engine(ctx, environ).run(start_response)


class Engine:
    """The response side of one request."""

    def __init__(self, ctx: RequestContext, environ: dict[str, Any] | None = None):
        self.ctx = ctx
        self.outcome = Outcome()
        self.ex = Exchange(outcome=self.outcome, stream=ctx.stream)
        self.stages: list[Stage] = response_stages(ctx)
        self.t0 = time.perf_counter()
        self.trace = tracing.begin(ctx, environ)  # spans, traceparent (aigw/tracing.py)
        self._settled = False

    # ------------------------------------------------------------------ entry
    def run(self, start_response: StartResponse) -> Iterable[bytes]:
        ctx = self.ctx
        try:
            terminal = ctx.terminal
            if ctx.pending or terminal is None:
                # a plugin's access phase did not complete, or no stage offers to answer
                # (the routing stage never ran): fail closed
                raise GatewayError(503, "The gateway could not complete its checks for this request; "
                                        "it was not sent to any model.", code="gateway_incomplete")
            terminal.check(ctx)
            limits.commit(ctx)  # the reservations the stages queued: one round trip
            ex = self.ex
            ex.keep_answer = any(s.keeps_answer(ctx) for s in self.stages)
            if ctx.early is not None:
                return self._replay(start_response, ctx.early)
            source = terminal.answer(self, ex)
            if source is None:
                return self._respond(start_response)
            return self._stream(start_response, source)
        except Respond as r:
            self.outcome.status = r.status
            start_response(_status_line(r.status), [*r.headers.items(), ("Content-Length", str(len(r.body)))])
            return _Closing(r.body, self._finish)
        except GatewayError as err:
            return self._error(start_response, err)
        except Exception as exc:
            log_failure("relay", "response", exc)
            return self._error(start_response, GatewayError(
                500, "The gateway failed while relaying this request.", code="gateway_error"))

    def _headers(self, headers: list[tuple[str, str]], failing: bool = False) -> list[tuple[str, str]]:
        headers += self.ex.head
        for s in self.stages:
            if not failing:
                s.headers(self.ctx, self.ex, headers)
                continue
            try:  # an error answer goes out even if a stage cannot add its headers
                s.headers(self.ctx, self.ex, headers)
            except Exception as exc:
                log_failure(s.name or type(s).__name__, "headers", exc)
        return headers

    def _error(self, start_response: StartResponse, err: GatewayError) -> Iterable[bytes]:
        body = err.encode(self.ctx.error_api)
        self.ex.usage = None
        headers = self._headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                                failing=True)
        headers += list(err.headers.items())
        self.outcome.status = err.status
        self.outcome.error = self.outcome.error or err.code or "error"
        start_response(_status_line(err.status), headers)
        return _Closing(body, self._finish)

    def _finish(self) -> None:
        self.outcome.duration = time.perf_counter() - self.t0
        self.trace.finish(self.ctx, self.outcome)
        self.ctx.finish(self.outcome)

    def _settle(self, usage: Usage | None) -> None:
        """The answer is over: its usage on the outcome, then every stage's response hook
        (once per request, however the answer ended)."""
        if self._settled:
            return
        self._settled = True
        ex = self.ex
        ex.usage = usage
        self.outcome.usage = usage
        if ex.replayed:
            self.outcome.cost_usd = 0.0
        for s in self.stages:
            s.response(self.ctx, ex)

    # ------------------------------------------------------------ non-stream
    def _respond(self, start_response: StartResponse) -> Iterable[bytes]:
        ex = self.ex
        self._settle(ex.usage)
        self.outcome.status = 200
        egress = ex.egress or self.ctx.egress
        body = egress.body(self.ctx, ex.response, ex.usage)
        headers = self._headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        start_response("200 OK", headers)
        return _Closing(body, self._finish)

    # ---------------------------------------------------------------- stream
    def _stream(self, start_response: StartResponse, source: Any) -> Iterable[bytes]:
        headers = self._headers([("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        start_response("200 OK", headers)
        return _Stream(self._stream_body(source), source, self)

    def _stream_body(self, source: Any) -> Iterator[bytes]:
        ctx, ex, outcome = self.ctx, self.ex, self.outcome
        egress = ex.egress or ctx.egress
        chunkers = [s for s in self.stages if s.wants_chunks(ctx, ex)]
        items = source.items()
        try:
            if not chunkers:  # nothing rewrites: items go to the client as they come
                for item in items:
                    yield egress.chunk(item)
            elif len(chunkers) == 1:
                stage = chunkers[0]
                for item in items:
                    for out in stage.chunk(ctx, ex, item):
                        yield egress.chunk(out)
                for out in stage.flush(ctx, ex):
                    yield egress.chunk(out)
            else:
                for item in items:
                    for out in _through(chunkers, 0, ctx, ex, [item]):
                        yield egress.chunk(out)
                for i, s in enumerate(chunkers):
                    for out in _through(chunkers, i + 1, ctx, ex, s.flush(ctx, ex)):
                        yield egress.chunk(out)
            self._settle(source.usage())
            yield egress.end(ctx, ex)
            outcome.status = 200
        except StreamBroken as b:
            outcome.error = b.error
            self._settle(source.usage())
            yield egress.error(b.message)
        except GeneratorExit:  # the client went away: charge what the provider produced so far
            outcome.error = outcome.error or "client_disconnected"
            self._settle(source.usage())
            outcome.status = 499
            raise
        except Exception as exc:
            log_failure("relay", "stream", exc)
            outcome.error = "stream_broken"
            self._settle(source.usage())
            yield egress.error("The provider stream ended unexpectedly.")
        finally:
            items.close()
            source.close()
            if ctx.state != "finished":  # a claimed context is never swept: finish it here
                outcome.status = outcome.status or 200
                self._finish()

    # -------------------------------------------------------------- early answer
    def _replay(self, start_response: StartResponse, replay: Replay) -> Iterable[bytes]:
        ctx, ex = self.ctx, self.ex
        ex.replayed = True
        ex.keep_answer = False
        target = replay.target
        self.outcome.target = target
        model = target.model if target is not None else ""
        if not ctx.stream:
            resp = copy.deepcopy(replay.response)
            if resp.get("usage") is None and replay.usage:
                resp["usage"] = dict(replay.usage)  # a streamed miss keeps its usage beside the answer
            usage = Usage.from_openai(resp.get("usage"))
            if usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0
                                 and ctx.api != "embeddings"):
                usage = counted_usage(ctx, model, _response_text(resp))
            usage = with_prompt(ctx, usage)
            if usage.estimated and ctx.api != "embeddings":
                resp["usage"] = {**usage.to_openai(), "estimated": True}
            ex.response, ex.usage = resp, usage
            return self._respond(start_response)
        self.outcome.ttft = time.perf_counter() - self.t0
        ex.usage = Usage.from_openai(replay.response.get("usage") or replay.usage)  # known before the first byte
        return self._stream(start_response, ReplayStream(ctx, replay, model))


def _through(stages: list[Stage], start: int, ctx: RequestContext, ex: Exchange,
             items: list[Any]) -> list[Any]:
    """``items`` through the chunk hooks of ``stages[start:]``, in order."""
    for s in stages[start:]:
        if not items:
            break
        items = [out for it in items for out in s.chunk(ctx, ex, it)]
    return items


class ReplayStream:
    """A stored answer's canonical chunks, replayed as a stream."""

    def __init__(self, ctx: RequestContext, replay: Replay, model: str):
        self.ctx = ctx
        self.replay = replay
        self.model = model
        self.provider_usage: Usage | None = None
        self.text: list[str] = []

    def items(self) -> Iterator[dict[str, Any]]:
        for c in self.replay.chunks():
            if "usage" in c and not c.get("choices"):
                if c.get("usage"):
                    self.provider_usage = Usage.from_openai(c["usage"])
                continue
            for ch in c.get("choices") or ():
                d = ch.get("delta") or {}
                if isinstance(d.get("content"), str):
                    self.text.append(d["content"])
                for tc in d.get("tool_calls") or ():
                    args = (tc.get("function") or {}).get("arguments")
                    if isinstance(args, str):
                        self.text.append(args)
            yield c

    def usage(self) -> Usage:
        return with_prompt(self.ctx, self.provider_usage or counted_usage(self.ctx, self.model,
                                                                          "".join(self.text)))

    def close(self) -> None:
        pass


# --------------------------------------------------------------------- helpers

class _Stream:
    """The WSGI body of a relayed stream.  If the server closes it before the first
    iteration (the client went away while the headers were being sent), the generator's
    own ``finally`` never runs: this closes the upstream connection and finishes the
    request (releasing its reservations) instead."""

    def __init__(self, gen: Iterator[bytes], source: Any, engine: Engine):
        self.gen = gen
        self.source = source
        self.engine = engine

    def __iter__(self) -> Iterator[bytes]:
        return self.gen

    def close(self) -> None:
        started = inspect.getgeneratorstate(self.gen) != inspect.GEN_CREATED  # type: ignore[arg-type]
        self.gen.close()  # type: ignore[attr-defined]
        if not started:
            self.source.close()
            engine = self.engine
            if engine.ctx.state != "finished":
                engine.outcome.status = 499
                engine.outcome.error = engine.outcome.error or "client_disconnected"
                engine._finish()


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


def _response_text(resp: dict[str, Any]) -> str:
    parts = []
    for ch in resp.get("choices") or ():
        msg = ch.get("message") or {}
        if isinstance(msg.get("content"), str):
            parts.append(msg["content"])
        for tc in msg.get("tool_calls") or ():
            parts.append((tc.get("function") or {}).get("arguments") or "")
    return "".join(parts)


Relay = Engine  # the name earlier tests and tools use
