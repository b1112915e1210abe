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
import os
import time
from typing import Any, TypeAlias

import gevent
import orjson
from gevent import GreenletExit

from . import __version__, airecord, schema
from .context import STORE, TICKET_HEADER, Outcome, RequestContext
from .errors import OPENAI, GatewayError
from .instances import REGISTRY, Instance
from .logs import log_failure, setup_logging
from .pipeline import Stage, run_request
from .relay.server import ensure_started

__all__ = ["AIPlugin", "kong_plugin", "issue_ticket", "log_failure", "setup_logging", "client_api",
           "flatten_headers", "error_response"]

log = logging.getLogger("aigw")

# kong-pdk's PDK object (``kong.request``, ``kong.response``, ...): kong-pdk ships no type
# information (``ignore_missing_imports`` in pyproject.toml), so the edge takes it as Any
Kong: TypeAlias = Any

def client_api(ctx: RequestContext | None) -> str:
    return ctx.error_api if ctx is not None else OPENAI


def flatten_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, raw in (headers or {}).items():
        v = (raw[0] if raw else "") if isinstance(raw, list) else raw
        out[k.lower()] = v if isinstance(v, str) else str(v)
    return out


# kong.request.get_headers() returns at most lua_max_req_headers (default 100) headers
# (kong/pdk/request.lua 3.9.1 664-679, kong/globalpatches.lua 131-158); the ticket is added
# last, so past the cap later plugins would not see it. With a max (at most 1000, request.lua
# 55) the cap moves; past it, the headers that matter are read one by one with get_header,
# which reads ngx.var and has no cap (kong/tools/http.lua 545-566).
MAX_HEADERS = 1000
_UNCAPPED = (TICKET_HEADER, "x-consumer-groups")


def request_headers(kong: Kong) -> dict[str, str]:
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


def issue_ticket(kong: Kong, anchor: Instance) -> RequestContext:
    """ai-router's access: the request's context and the ticket that lets it into the relay.

    2 PDK calls (get_consumer, set_header), plus 1 when the registry needs the request's route
    or service and ai-router's own scope does not give it (``_request_scope``). The
    body, path and headers are read by the relay from the request Kong proxies to it
    (aigw/relay/intake.py), and every other AI plugin's access does no PDK call at all: the
    relay finds their instances in the registry (aigw/instances.py)."""
    consumer = kong.client.get_consumer()
    route_id, service_id = _request_scope(kong, anchor)
    ctx = STORE.create(api="", path="", headers={}, raw_body=b"",
                       consumer=consumer if isinstance(consumer, dict) else None)
    ctx.anchor, ctx.route_id, ctx.service_id = anchor, route_id, service_id
    kong.service.request.set_header(TICKET_HEADER, ctx.ticket)
    return ctx


def _request_scope(kong: Kong, anchor: Instance) -> tuple[str | None, str | None]:
    """The route and service of the request, as far as the registry needs them to pick each
    plugin's config the way Kong's plugin iterator does (kong/runloop/plugins_iterator.lua
    3.9.1 load_configuration_through_combos, 282-292: ctx.route.id, ctx.service.id).

    ai-router runs last of the AI plugins in Kong (priority 769), so every other AI plugin
    instance of this request has been started and seen by now: when none of the live ones is
    scoped to a route (or a service) that the anchor's own scope does not give, the id is
    not needed and no PDK call is made for it."""
    route_id, service_id = anchor.route_id, anchor.service_id
    scoped = REGISTRY.scoped()
    if route_id is None and "route" in scoped:
        route = kong.router.get_route()
        route_id = route.get("id") if isinstance(route, dict) else None
        service = route.get("service") if isinstance(route, dict) else None
        if service_id is None and isinstance(service, dict):
            service_id = service.get("id")
        return route_id, service_id
    if service_id is None and "service" in scoped:
        if route_id is not None and anchor.route_service_read:
            return route_id, anchor.route_service
        service = kong.router.get_service()
        service_id = service.get("id") if isinstance(service, dict) else None
        if route_id is not None:
            # a route-scoped instance: its route's service is fixed for the instance's life (a
            # change to the route rebuilds Kong's plugin iterator, which starts a new instance:
            # plugins_iterator.lua 179-188, plugin_servers/plugin.lua 258-299)
            anchor.route_service, anchor.route_service_read = service_id, True
    return route_id, service_id


def error_response(kong: Kong, err: GatewayError, api: str) -> None:
    headers = {"Content-Type": "application/json", **err.headers}
    kong.response.exit(err.status, err.encode(api), headers)


class AIPlugin:
    """Base for the Kong plugin classes in ``plugins/``.  Subclasses set NAME and PRIORITY
    and implement ``on_access(kong, ctx)``, the request side of their feature, which the
    relay runs (aigw/relay/intake.py); ``self.config`` is validated against
    ``schemas/<NAME>.json`` with defaults filled.

    Kong's access event: ai-router (``ANCHOR``) issues the request's ticket; every other AI
    plugin only marks its instance live and returns, with no PDK call (aigw/instances.py)."""

    NAME = ""
    PRIORITY = 0   # Kong's
    ORDER = 0      # the pipeline's (the relay runs request sides highest first)
    ANCHOR = False
    # set by the class kong_plugin builds (its setup): the plugin's stage, and the stages its
    # access runs
    rt: Stage
    stages: list[Stage]

    def __init__(self, config: dict[str, Any]):
        self.config = schema.validate(self.NAME, config)
        self.setup(self.config)
        self.instance = REGISTRY.register(self.NAME, self.ORDER, self.config, self)
        ensure_started()

    def setup(self, config: dict[str, Any]) -> None:
        """Build the core objects for this config once per plugin instance."""

    def on_access(self, kong: Kong, ctx: RequestContext) -> None:
        raise NotImplementedError

    def access(self, kong: Kong) -> None:
        try:
            inst = self.__dict__.get("instance")
            if inst is None:  # a subclass whose __init__ did not call ours
                inst = self.instance = REGISTRY.register(self.NAME, self.ORDER, self.config, self)
            REGISTRY.touch(inst)
        except Exception as exc:  # never escapes (module docstring); the relay fails closed
            log_failure(self.NAME, "access", exc)
            return
        if not self.ANCHOR:
            return
        try:
            issue_ticket(kong, self.instance)
            return
        except GreenletExit:
            raise
        except Exception as exc:
            log_failure(self.NAME, "access", exc)
            try:
                error_response(kong, GatewayError(
                    500, f"The gateway could not process this request ({self.NAME} failed); "
                         "it was not sent to any model.", code="gateway_error"), OPENAI)
            except Exception as exc2:  # the PDK itself failed: nothing else we can do
                log_failure(self.NAME, "exit", exc2)
        raise GreenletExit  # the event was answered by exit; see module docstring


# Kong's log (opt-in): ai-router's log phase writes each request's outcome record to Kong's
# error log at notice. It costs one event and two PDK calls per request, so it is off unless
# AIGW_KONG_LOG_RECORD=1; the record is always in the plugin server's JSON log line.
KONG_LOG_RECORD = os.environ.get("AIGW_KONG_LOG_RECORD", "").lower() in ("1", "true", "yes", "on")


def log_ai_record(plugin: str, kong: Kong) -> None:
    """Log phase of ai-router with AIGW_KONG_LOG_RECORD on: the outcome record to Kong's log at
    notice (aigw/airecord.py says why not the serializer). 2 PDK calls; the headers are the
    ones Kong saved for the log phase (at most lua_max_req_headers of them: past that the
    ticket is not seen and only the relay's JSON line has the record)."""
    try:
        ticket = flatten_headers(kong.request.get_headers()).get(TICKET_HEADER)
        cid = STORE.ticket_id(ticket)
        if cid is None:
            return
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


def kong_plugin(name: str, stage: type[Stage], priority: int | None = None, *,
                anchor: bool = False) -> tuple[type[AIPlugin], list[dict[str, Any]], str, int]:
    """Everything a kong-pdk plugin module exports, for one of our plugins:
    ``Plugin, Schema, version, priority = kong_plugin("ai-cost", CostStage)``.

    Each instance builds its stage from its validated config. The stage's request side runs
    in the relay (aigw/relay/intake.py) through ``on_access``, in the pipeline's order, which is
    the stage's ``priority``. ``priority`` here is Kong's, when it differs from the stage's:
    ai-router's (769) makes it the last AI plugin in Kong. ``Schema`` is generated from
    ``schemas/<name>.json``; ``anchor`` (ai-router) issues the ticket in access and, with
    AIGW_KONG_LOG_RECORD on, writes the outcome record to Kong's log in its log phase
    (aigw/airecord.py)."""

    def setup(self: AIPlugin, config: dict[str, Any]) -> None:
        self.rt = stage(config)
        self.stages = [self.rt]

    def on_access(self: AIPlugin, kong: Kong, ctx: RequestContext) -> None:
        run_request(ctx, self.stages)

    def on_access_recording(self: AIPlugin, kong: Kong, ctx: RequestContext) -> None:
        def record(out: Outcome) -> None:
            airecord.RECENT.put(ctx.id, airecord.outcome(ctx, out))
        ctx.on_finish(record)
        run_request(ctx, self.stages)

    records = anchor and KONG_LOG_RECORD
    kong_priority = stage.priority if priority is None else priority
    if kong_priority != stage.priority and not anchor:
        # only the anchor runs at another place in Kong than in the pipeline (see above)
        raise ValueError(f"{name}: priority {kong_priority} differs from its stage's {stage.priority}")
    attrs: dict[str, Any] = {"NAME": name, "PRIORITY": kong_priority, "ANCHOR": anchor,
                             "ORDER": stage.priority, "setup": setup,
                             "on_access": on_access_recording if records else on_access,
                             "__doc__": stage.__doc__, "__module__": name}
    if records:
        def log(self: AIPlugin, kong: Kong) -> None:
            log_ai_record(name, kong)
        attrs["log"] = log
    cls = type("Plugin", (AIPlugin,), attrs)
    return cls, schema.kong_fields(name), __version__, kong_priority
