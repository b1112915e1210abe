"""OpenTelemetry traces with the GenAI semantic conventions, exported over OTLP/HTTP.

On only when an OTLP endpoint is configured through the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and
not disabled (``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``).  The
official opentelemetry-sdk and its OTLP/HTTP exporter then read every other
``OTEL_*`` setting themselves (headers, timeout, compression, batch delays);
``OTEL_SERVICE_NAME`` names the service (default ``kong-ai-gateway``).

Off, the SDK is never imported and a request costs one dict lookup: the
client's W3C ``traceparent``/``tracestate`` are passed through to the provider
unchanged (when well-formed), so traces stay joined across the gateway.

Spans (never any prompt or answer text, key or consumer name):

* one SERVER span per request, ``{gen_ai.operation.name} {gen_ai.request.model}``,
  child of the client's ``traceparent``;
* one CLIENT span per provider attempt, child of the request span; the provider
  call carries a ``traceparent`` naming the attempt span;
* time to first token: ``gen_ai.server.time_to_first_token`` (seconds) on the
  request span and an ``aigw.first_token`` event at that instant.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .relay.observe import PROVIDER_NAMES, operation_name

__all__ = ["begin", "enabled", "reset"]

log = logging.getLogger("aigw")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_TRACESTATE_MAX = 512  # W3C: 32 list members; keep it bounded
_DEFAULT_SERVICE = "kong-ai-gateway"

_lock = threading.Lock()
_state: dict[str, Any] | None = None  # None: not decided yet; {"tracer": None}: off


def enabled(env: Any = os.environ) -> bool:
    """Whether the standard OTEL_* variables ask for trace export over OTLP/HTTP."""
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    exporters = (env.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    if "otlp" not in [e.strip() for e in exporters.split(",")]:
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _tracer() -> Any:
    global _state
    state = _state
    if state is None:
        with _lock:
            if _state is None:
                _state = _setup() if enabled() else {"tracer": None}
            state = _state
    return state["tracer"]


def _setup() -> dict[str, Any]:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol != "http/protobuf":
        log.warning("tracing off: OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported "
                    "(this gateway exports http/protobuf only)", protocol[:32])
        return {"tracer": None}
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415 (optional: SDK only when tracing is on)
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 (optional: SDK only when tracing is on)
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 (optional: SDK only when tracing is on)
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415 (optional: SDK only when tracing is on)

    attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": _DEFAULT_SERVICE}
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return {"tracer": provider.get_tracer("aigw"), "provider": provider}


def reset() -> None:
    """Flush and stop the exporter, and forget the decision (tests, benchmarks)."""
    global _state
    with _lock:
        provider = (_state or {}).get("provider")
        _state = None
    if provider is not None:
        provider.shutdown()


def begin(ctx: Any, environ: dict[str, Any] | None) -> _Off | RequestTrace:
    """The trace of one relayed request (a no-op object when tracing is off)."""
    environ = environ or {}
    tracer = _tracer()
    if tracer is None:
        tp = environ.get("HTTP_TRACEPARENT")
        if tp and _TRACEPARENT.match(tp) and not tp.startswith("ff"):
            return _PassThrough(tp, environ.get("HTTP_TRACESTATE"))
        return OFF
    try:
        return RequestTrace(tracer, ctx, environ)
    except Exception as exc:  # tracing never fails a request
        _log_failure("begin", exc)
        return OFF


def _log_failure(where: str, exc: Exception) -> None:
    log.warning("tracing: %s failed (%s); the request goes on untraced", where, type(exc).__name__)


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """A RequestTrace hook that logs instead of raising (tracing never fails a request)."""
    def hook(self: Any, *args: Any) -> None:
        try:
            return fn(self, *args)
        except Exception as exc:
            _log_failure(fn.__name__, exc)
    hook.__name__ = fn.__name__
    hook.__doc__ = fn.__doc__
    return hook


class _Off:
    """Tracing off, no trace context from the client: every hook does nothing."""

    __slots__ = ()

    def provider_call(self, target: Any, up: Any) -> None:
        pass

    def attempt_failed(self, kind: str, status: int | None) -> None:
        pass

    def finish(self, ctx: Any, outcome: Any) -> None:
        pass


OFF = _Off()


class _PassThrough(_Off):
    """Tracing off: the client's trace context goes to the provider unchanged."""

    __slots__ = ("traceparent", "tracestate")

    def __init__(self, traceparent: str, tracestate: str | None):
        self.traceparent = traceparent
        self.tracestate = tracestate if tracestate and len(tracestate) <= _TRACESTATE_MAX else None

    def provider_call(self, target: Any, up: Any) -> None:
        up.headers["traceparent"] = self.traceparent
        if self.tracestate:
            up.headers["tracestate"] = self.tracestate


class RequestTrace:
    """The request span and the span of the provider attempt in flight."""

    def __init__(self, tracer: Any, ctx: Any, environ: dict[str, Any]):
        from opentelemetry.trace import SpanKind  # noqa: PLC0415 (optional: SDK only when tracing is on)
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415 (optional: SDK only when tracing is on)

        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
        carrier = {}
        for key in ("traceparent", "tracestate"):
            value = environ.get("HTTP_" + key.upper())
            if value and len(value) <= _TRACESTATE_MAX:
                carrier[key] = value
        parent = self._propagator.extract(carrier)
        self.op = operation_name(ctx)
        model = ctx.model.name if getattr(ctx, "model", None) is not None else None
        attrs = {"gen_ai.operation.name": self.op, "aigw.api": ctx.api, "aigw.stream": bool(ctx.stream),
                 "aigw.request_id": ctx.id}
        if model:
            attrs["gen_ai.request.model"] = model
        self.start_ns = time.time_ns()
        self.span = tracer.start_span(f"{self.op} {model}" if model else self.op, context=parent,
                                      kind=SpanKind.SERVER, attributes=attrs, start_time=self.start_ns)
        self.attempt: Any = None
        sc = self.span.get_span_context()
        if sc.is_valid and isinstance(getattr(ctx, "log_fields", None), dict):
            # the request's log line names its trace and span (logs <-> traces)
            ctx.log_fields["trace_id"] = format(sc.trace_id, "032x")
            ctx.log_fields["span_id"] = format(sc.span_id, "016x")

    # ----------------------------------------------------------------- hooks
    @_guarded
    def provider_call(self, target: Any, up: Any) -> None:
        """A provider attempt starts: its span, and its traceparent on the upstream request."""
        from opentelemetry.trace import SpanKind, set_span_in_context  # noqa: PLC0415 (optional: SDK only when tracing is on)

        self._end_attempt()
        attrs: dict[str, Any] = {"gen_ai.operation.name": self.op, "gen_ai.request.model": target.model,
                                 "aigw.provider": target.provider.name}
        name = PROVIDER_NAMES.get(target.provider.type)
        if name:
            attrs["gen_ai.provider.name"] = name
        try:
            url = urlsplit(up.url)
            if url.hostname:
                attrs["server.address"] = url.hostname
                attrs["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            pass
        parent = set_span_in_context(self.span)
        self.attempt = self._tracer.start_span(f"{self.op} {target.model}", context=parent,
                                               kind=SpanKind.CLIENT, attributes=attrs)
        self._propagator.inject(up.headers, context=set_span_in_context(self.attempt))

    @_guarded
    def attempt_failed(self, kind: str, status: int | None) -> None:
        if self.attempt is not None:
            self._fail(self.attempt, str(status) if kind == "status" and status else kind, status)
            self._end_attempt()

    @_guarded
    def finish(self, ctx: Any, outcome: Any) -> None:
        span = self.span
        target = outcome.target
        usage_attrs = outcome.usage.otel_fields() if outcome.usage is not None else {}
        attrs: dict[str, Any] = {**usage_attrs, "http.response.status_code": outcome.status,
                                 "aigw.attempts": len(outcome.attempts)}
        if target is not None:
            attrs["gen_ai.response.model"] = target.model
            name = PROVIDER_NAMES.get(target.provider.type)
            if name:
                attrs["gen_ai.provider.name"] = name
        if outcome.cache_status:
            attrs["aigw.cache.status"] = outcome.cache_status
        if outcome.cost_usd is not None:
            attrs["aigw.cost_usd"] = outcome.cost_usd
        if outcome.ttft is not None:
            attrs["gen_ai.server.time_to_first_token"] = outcome.ttft
            span.add_event("aigw.first_token", timestamp=self.start_ns + int(outcome.ttft * 1e9))
        span.set_attributes(attrs)
        if self.attempt is not None:
            last = outcome.attempts[-1] if outcome.attempts else {}
            if last.get("result") == "ok":
                self.attempt.set_attributes({**usage_attrs, "gen_ai.response.model": last.get("model") or ""})
                if outcome.error:
                    self._fail(self.attempt, outcome.error, None)
            else:
                self._fail(self.attempt, str(last.get("status") or outcome.error or "error"),
                           last.get("status"))
            self._end_attempt()
        if outcome.error or not 100 <= outcome.status < 400:
            self._fail(span, outcome.error or str(outcome.status or "error"), None)
        span.end()

    # --------------------------------------------------------------- helpers
    def _end_attempt(self) -> None:
        if self.attempt is not None:
            self.attempt.end()
            self.attempt = None

    @staticmethod
    def _fail(span: Any, error_type: str, status: int | None) -> None:
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 (optional: SDK only when tracing is on)
        span.set_attribute("error.type", error_type)
        if status:
            span.set_attribute("http.response.status_code", status)
        span.set_status(Status(StatusCode.ERROR))
