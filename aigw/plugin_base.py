"""The thin edge between Kong's PDK and the core: one base class for our plugins.

Every phase handler is wrapped so that nothing escapes it: in kong-pdk 0.36
an exception that leaves a handler means the event is never answered and
Kong's request hangs (kong_pdk/server.py ``_handler_event_func`` only answers
"ret" after a normal return).  On any error the request is ended with a clean
error in the client API's format (fail closed) and the failure is logged
with its type and location only, never the request content.

After ``kong.response.exit`` kong-pdk has already dropped the event, and a
handler that returned normally would block forever on ``ch.put("ret")``;
so after an exit the handler greenlet ends with ``GreenletExit``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import orjson
from gevent import GreenletExit

from . import __version__, airecord, schema
from .context import STORE, TICKET_HEADER, Outcome, RequestContext
from .errors import OPENAI, GatewayError
from .logs import log_failure, setup_logging
from .pipeline import Respond, Stage, run_request
from .relay.server import ensure_started

__all__ = ["AIPlugin", "kong_plugin", "get_context", "log_failure", "setup_logging", "api_for_path",
           "client_api", "flatten_headers", "request_headers", "acl_groups", "error_response"]

log = logging.getLogger("aigw")

_API_BY_SUFFIX = (
    ("/chat/completions", "chat"),
    ("/embeddings", "embeddings"),
    ("/models", "models"),
    ("/responses", "responses"),
    ("/messages/count_tokens", "count_tokens"),
    ("/messages", "anthropic"),
)


def api_for_path(path: str) -> str | None:
    p = path.rstrip("/")
    for suffix, api in _API_BY_SUFFIX:
        if p.endswith(suffix):
            return api
    return None


def client_api(ctx: RequestContext | None) -> str:
    return ctx.error_api if ctx is not None else OPENAI


def flatten_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (headers or {}).items():
        if isinstance(v, list):
            v = v[0] if v else ""
        out[k.lower()] = v if isinstance(v, str) else str(v)
    return out


# kong.request.get_headers() returns at most lua_max_req_headers (default 100) headers
# (kong/pdk/request.lua 3.9.1 664-679, kong/globalpatches.lua 131-158); the ticket is added
# last, so past the cap later plugins would not see it. With a max (at most 1000, request.lua
# 55) the cap moves; past it, the headers that matter are read one by one with get_header,
# which reads ngx.var and has no cap (kong/tools/http.lua 545-566).
MAX_HEADERS = 1000
_UNCAPPED = (TICKET_HEADER, "x-consumer-groups")


def request_headers(kong) -> dict[str, str]:
    """The request headers (first value of each), complete for what the gateway relies on
    whatever their number: 1 PDK call, plus one per ``_UNCAPPED`` header past 1000 headers."""
    raw = kong.request.get_headers(MAX_HEADERS)
    headers = flatten_headers(raw)
    if sum(len(v) if isinstance(v, list) else 1 for v in (raw or {}).values()) >= MAX_HEADERS:
        for name in _UNCAPPED:
            value = kong.request.get_header(name)
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value if isinstance(value, str) else str(value)
    return headers


def get_context(kong) -> RequestContext:
    """Find this request's context, or create it (first AI plugin of the request).

    PDK calls: 1 for every later plugin (get_headers); 5 for the first.
    """
    headers = request_headers(kong)
    ctx = STORE.lookup(headers.get(TICKET_HEADER))
    if ctx is not None:
        return ctx
    path = kong.request.get_path() or "/"
    api = api_for_path(path)
    if api is None:
        raise GatewayError(404, "Unknown AI endpoint: the route must end in /chat/completions, "
                                "/embeddings, /models, /responses, /messages or /messages/count_tokens.", code="unknown_endpoint")
    raw = kong.request.get_raw_body() if api != "models" else b""
    if isinstance(raw, str):
        raw = raw.encode()
    consumer = kong.client.get_consumer()
    headers.pop(TICKET_HEADER, None)
    ctx = STORE.create(api=api, path=path, headers=headers, raw_body=raw or b"",
                       consumer=consumer if isinstance(consumer, dict) else None,
                       groups=acl_groups(headers))
    kong.service.request.set_header(TICKET_HEADER, ctx.ticket)
    return ctx


def acl_groups(headers: dict[str, str]) -> list[str]:
    """The consumer's groups as Kong's acl plugin (priority 950, before ours) set them in
    ``X-Consumer-Groups`` (kong/plugins/acl/handler.lua). Kong OSS has no consumer-groups
    PDK; the acl plugin overwrites this header on every request it lets through, so
    enable acl wherever a config uses groups (aigw-validate checks it)."""
    raw = headers.get("x-consumer-groups") or ""
    return [g.strip() for g in raw.split(",") if g.strip()]


def error_response(kong, err: GatewayError, api: str) -> None:
    headers = {"Content-Type": "application/json", **err.headers}
    kong.response.exit(err.status, err.encode(api), headers)


class AIPlugin:
    """Base for the Kong plugin classes in ``plugins/``.  Subclasses set NAME
    and implement ``on_access(kong, ctx)``; ``self.config`` is validated
    against ``schemas/<NAME>.json`` with defaults filled."""

    NAME = ""

    def __init__(self, config: dict[str, Any]):
        self.config = schema.validate(self.NAME, config)
        self.setup(self.config)
        ensure_started()

    def setup(self, config: dict[str, Any]) -> None:
        """Build the core objects for this config once per plugin instance."""

    def on_access(self, kong, ctx: RequestContext) -> None:
        raise NotImplementedError

    def access(self, kong) -> None:
        ctx: RequestContext | None = None
        try:
            ctx = get_context(kong)
            ctx.pending.add(self.NAME)  # cleared only when this plugin's decision is complete
            self.on_access(kong, ctx)
            ctx.pending.discard(self.NAME)
            ctx.done.add(self.NAME)
            return
        except GreenletExit:
            raise
        except Respond as r:
            try:
                kong.response.exit(r.status, r.body, r.headers)
            except Exception as exc:
                log_failure(self.NAME, "exit", exc)
            if ctx is not None:
                ctx.finish(Outcome(status=r.status))
        except GatewayError as err:
            self._fail(kong, ctx, err)
        except Exception as exc:
            log_failure(self.NAME, "access", exc)
            self._fail(kong, ctx, GatewayError(
                500, f"The gateway could not process this request ({self.NAME} failed); "
                     "it was not sent to any model.", code="gateway_error"))
        raise GreenletExit  # the event was answered by exit; see module docstring

    def _fail(self, kong, ctx: RequestContext | None, err: GatewayError) -> None:
        if ctx is not None:
            ctx.finish(Outcome(status=err.status, error=err.code or "denied"))
        try:
            error_response(kong, err, client_api(ctx))
        except Exception as exc:  # the PDK itself failed: nothing else we can do
            log_failure(self.NAME, "exit", exc)

    def finish_unproxied(self, kong) -> None:
        """Log phase: settle a request that never reached the relay (1 PDK call)."""
        try:
            headers = flatten_headers(kong.request.get_headers())
            ctx = STORE.lookup(headers.get(TICKET_HEADER))
            if ctx is not None and ctx.state == "open":
                ctx.finish(Outcome(status=0, error="not_proxied"))
        except Exception as exc:
            log_failure(self.NAME, "log", exc)


def log_ai_record(plugin: str, kong) -> None:
    """Log phase of the plugin that records (ai-router): settle a request that never reached
    the relay, then write its outcome record to Kong's log at notice (aigw/airecord.py says why
    not the serializer). 2 PDK calls; the headers are the ones Kong saved for the log phase
    (at most lua_max_req_headers of them: past that the ticket is not seen and only the
    relay's JSON line has the record)."""
    try:
        ticket = flatten_headers(kong.request.get_headers()).get(TICKET_HEADER)
        cid = STORE.ticket_id(ticket)
        if cid is None:
            return
        ctx = STORE.lookup(ticket)
        if ctx is not None and ctx.state == "open":
            ctx.finish(Outcome(status=0, error="not_proxied"))
        rec = airecord.RECENT.pop(cid)
        deadline = time.monotonic() + 2.0
        while rec is None and STORE.lookup(ticket) is not None and time.monotonic() < deadline:
            gevent.sleep(0.02)  # the relay is writing the last bytes (claimed, not finished yet)
            rec = airecord.RECENT.pop(cid)
        if rec is not None:
            kong.log.notice(orjson.dumps(rec).decode())
    except GreenletExit:
        raise
    except Exception as exc:
        log_failure(plugin, "log", exc)


def kong_plugin(name: str, stage: type[Stage], priority: int | None = None, *, settles: bool = False,
                records: bool = False):
    """Everything a kong-pdk plugin module exports, for one of our plugins:
    ``Plugin, Schema, version, priority = kong_plugin("ai-cost", CostStage, 770)``.

    Each instance builds its stage from its validated config; the access phase is the
    stage's request side (``aigw.pipeline.run_request``), which also puts the stage into
    the request's pipeline, so the relay runs its response side.
    ``Schema`` is generated from ``schemas/<name>.json``; ``settles`` adds the
    ``log`` phase that settles requests which never reached the relay; ``records``
    (ai-router) puts the routing decision into Kong's log serializer in access (1 PDK call)
    and writes the outcome record to Kong's log in the log phase (aigw/airecord.py).
    """

    def setup(self, config):
        self.rt = stage(config)
        self.stages = [self.rt]

    def on_access(self, kong, ctx):
        run_request(ctx, self.stages)

    def on_access_recording(self, kong, ctx):
        ctx.on_finish(lambda out: airecord.RECENT.put(ctx.id, airecord.outcome(ctx, out)))
        run_request(ctx, self.stages)
        kong.log.set_serialize_value(airecord.KEY, airecord.decision(ctx))

    attrs: dict[str, Any] = {"NAME": name, "setup": setup,
                             "on_access": on_access_recording if records else on_access,
                             "__doc__": stage.__doc__, "__module__": name}
    if records:
        attrs["log"] = lambda self, kong: log_ai_record(name, kong)
    elif settles:
        attrs["log"] = lambda self, kong: self.finish_unproxied(kong)
    cls = type("Plugin", (AIPlugin,), attrs)
    if priority is None:
        priority = stage.priority
    elif stage.priority and priority != stage.priority:
        raise ValueError(f"{name}: priority {priority} differs from its stage's {stage.priority}")
    return cls, schema.kong_fields(name), __version__, priority
