"""Prometheus metrics named after the OpenTelemetry GenAI semantic conventions.

Everything lives in its own ``CollectorRegistry`` (never prometheus_client's
global one).  Module-level functions use one process-wide ``Metrics``; tests
build their own.  Label values never carry prompt content or credentials.

Prometheus names follow OpenTelemetry's Prometheus conversion: dots become
underscores and the unit ``s`` becomes the ``_seconds`` suffix
(``gen_ai.client.operation.duration`` -> ``gen_ai_client_operation_duration_seconds``).
The ``consumer`` label is opt-in (``AIGW_METRICS_CONSUMER_LABEL=true``): its
cardinality grows with the number of Kong consumers.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from gevent import monkey
from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import make_wsgi_app, start_wsgi_server

from aigw.types import Usage

__all__ = ["Metrics", "record_request", "record_cache", "start_server", "render", "default",
           "DURATION_BUCKETS", "TTFT_BUCKETS", "TOKEN_BUCKETS"]

# OTel GenAI recommended explicit bucket boundaries
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)

COMMON = ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_response_model",
          "gen_ai_provider_name")
CONSUMER_ENV = "AIGW_METRICS_CONSUMER_LABEL"


def consumer_label_enabled(env: Any = os.environ) -> bool:
    """The opt-in switch for the per-consumer label."""
    return (env.get(CONSUMER_ENV) or "").strip().lower() in ("1", "true", "yes", "on")


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "unknown"


def outcome(status: int) -> str:
    if 100 <= status < 400:
        return "success"
    if status == 429:
        return "rate_limited"
    if 400 <= status < 500:
        return "client_error"
    if 500 <= status <= 599:
        return "server_error"
    return "error"  # no status: connection dropped, internal failure


class Metrics:
    """The gateway's metric families on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, consumer_label: bool | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumer_label = consumer_label_enabled() if consumer_label is None else consumer_label
        common = COMMON + (("consumer",) if self.consumer_label else ())
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration: the relay's call to the provider(s), failover included, to "
            "the last response byte. Only requests that reached a provider.",
            common + ("error_type",), buckets=DURATION_BUCKETS, registry=r)
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds", "Time from request to last response byte.",
            common + ("error_type",), buckets=DURATION_BUCKETS, registry=r)
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds", "Time to the first generated token.",
            common, buckets=TTFT_BUCKETS, registry=r)
        self.tokens = Histogram(
            "gen_ai_client_token_usage", "Tokens per request by token type.",
            common + ("gen_ai_token_type",), buckets=TOKEN_BUCKETS, registry=r)
        self.requests = Counter(
            "aigw_requests", "Requests answered, by status class and outcome.",
            common + ("status_class", "outcome"), registry=r)
        self.cost = Counter("aigw_cost_usd", "Estimated spend in USD.", common, registry=r)
        self.cache = Counter("aigw_cache", "Response cache lookups by status.", ("status",),
                             registry=r)

    def record_request(self, model: str | None, response_model: str | None, provider: str | None,
                       consumer: str | None, status: int, duration_s: float,
                       ttft_s: float | None = None, usage: Usage | None = None,
                       cost: float | None = None, operation: str = "chat",
                       reached_provider: bool = False) -> None:
        """Record one finished request."""
        labels: tuple[str, ...] = (operation or "", model or "", response_model or "", provider or "")
        if self.consumer_label:
            labels += (consumer or "",)
        error_type = "" if 100 <= status < 400 else (str(status) if status else "error")
        self.requests.labels(*labels, status_class(status), outcome(status)).inc()
        self.duration.labels(*labels, error_type).observe(max(duration_s, 0.0))
        if reached_provider:
            self.operation_duration.labels(*labels, error_type).observe(max(duration_s, 0.0))
        if ttft_s is not None:
            self.ttft.labels(*labels).observe(max(ttft_s, 0.0))
        if usage is not None:
            self.tokens.labels(*labels, "input").observe(usage.input_tokens)
            self.tokens.labels(*labels, "output").observe(usage.output_tokens)
            for kind, n in (("cache_read", usage.cache_read_tokens),
                            ("cache_creation", usage.cache_write_tokens),
                            ("reasoning", usage.reasoning_tokens)):
                if n > 0:  # absent kinds would only pile up in the lowest bucket
                    self.tokens.labels(*labels, kind).observe(n)
        if cost is not None and cost > 0:
            self.cost.labels(*labels).inc(cost)

    def record_cache(self, status: str) -> None:
        """Count one cache lookup (hit, miss, bypass, store, ...)."""
        self.cache.labels(status or "unknown").inc()

    def render(self) -> bytes:
        """Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


_lock = threading.Lock()
_default: Metrics | None = None
_server: tuple[str, int, Any] | None = None


def default() -> Metrics:
    """The process-wide instance (created on first use)."""
    global _default
    with _lock:
        if _default is None:
            _default = Metrics()
        return _default


def record_request(model: str | None, response_model: str | None, provider: str | None,
                   consumer: str | None, status: int, duration_s: float,
                   ttft_s: float | None = None, usage: Usage | None = None,
                   cost: float | None = None, operation: str = "chat",
                   reached_provider: bool = False) -> None:
    default().record_request(model, response_model, provider, consumer, status, duration_s,
                             ttft_s, usage, cost, operation, reached_provider)


def record_cache(status: str) -> None:
    default().record_cache(status)


def render() -> bytes:
    return default().render()


def start_server(port: int, host: str = "127.0.0.1", metrics: Metrics | None = None) -> int:
    """Serve ``/metrics`` once per process; later calls return the first server's port.

    Uses gevent's WSGI server when gevent has patched ``socket`` (the plugin
    server), else prometheus_client's threaded server.  ``port=0`` picks a free port.
    """
    global _server
    registry = (metrics or default()).registry
    with _lock:
        if _server is not None:
            return _server[1]
        app = make_wsgi_app(registry)
        if _gevent_patched():
            server: Any = WSGIServer((host, port), app, log=None)
            server.start()
            bound: int = server.address[1]
        else:
            server, _thread = start_wsgi_server(port, addr=host, registry=registry)
            bound = server.server_port
        _server = (host, bound, server)
        return bound


def _gevent_patched() -> bool:
    return bool(monkey.is_module_patched("socket"))
