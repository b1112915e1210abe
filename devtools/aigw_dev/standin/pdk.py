"""Per-request state and the PDK methods external plugins can call.

Method names resolve like mp_rpc.lua ``get_field`` (index the ``kong`` table) with the overrides of
plugin.lua ``exposed_api``. Semantics follow kong/pdk/*.lua:

- request.lua: ``get_header`` is case-insensitive and treats ``_`` as ``-`` (ngx.req.get_headers
  metatable); ``get_headers``/``get_query`` are multi-maps (mp_rpc.lua ``fix_mmap``: a string
  becomes ``[v]``, a flag arg ``true`` becomes ``[]``); raw bodies travel as msgpack binary
  (``fix_raw``).
- service/request.lua: ``set_header`` etc. change the request headers (ngx.req.set_header edits
  headers_in), so later plugins see them via ``kong.request.get_header(s)``; ``set_query`` changes
  the args ``get_query`` reads; ``set_raw_body`` changes the body ``get_raw_body`` reads;
  ``set_path`` only changes the upstream URI.
- response.lua: ``exit``/``error`` end the request; table bodies are JSON-encoded with
  ``Content-Type: application/json; charset=utf-8``; ``error`` uses Kong's JSON error template.
- log.lua: ``serialize`` returns the basic serializer's shape (kong/pdk/log.lua ``serialize``);
  plugin.lua wraps it into a JSON string.
- In the log phase reads come from the request's saved state (plugin.lua ``build_phases``
  saves request/response headers, status, ctx.shared, ngx.ctx).
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import orjson

from . import KONG_VERSION
from .config import Consumer, Plugin, Route, Service

NODE_ID = str(uuid.uuid4())
JSON_CT = "application/json; charset=utf-8"
# kong/tools/http.lua ERROR_TEMPLATES[application/json]
ERROR_TEMPLATE = '{\n  "message":"%s",\n  "request_id":"%s"\n}'
HTTP_MESSAGES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                 405: "Method not allowed", 413: "Request size limit exceeded",
                 429: "API rate limit exceeded", 500: "An unexpected error occurred",
                 502: "An invalid response was received from the upstream server",
                 503: "Service unavailable", 504: "The upstream server is timing out"}


class Exit(Exception):
    """A plugin ended the request (kong.response.exit / kong.response.error)."""


class PdkFailure(Exception):
    """A PDK call the stand-in cannot serve under --strict-pdk, or a bad argument (a Lua error)."""


@dataclass
class Response:
    status: int
    headers: list[list[str]]
    body: bytes | None = None
    source: str = "service"  # kong.response.get_source: "exit" | "service" | "error"


def header_get(headers: list[list[str]], name: str) -> str | None:
    low = name.lower().replace("_", "-")
    for k, v in headers:
        if k.lower() == low:
            return v
    return None


def header_set(headers: list[list[str]], name: str, value: Any) -> None:
    header_clear(headers, name)
    header_add(headers, name, value)


def header_add(headers: list[list[str]], name: str, value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        headers.append([name, _hval(v)])


def header_clear(headers: list[list[str]], name: str) -> None:
    low = name.lower().replace("_", "-")
    headers[:] = [h for h in headers if h[0].lower().replace("_", "-") != low]


def _hval(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def multimap(headers: list[list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in headers:
        out.setdefault(k.lower(), []).append(v)
    return out


def query_multimap(qs: str) -> dict[str, list[str]]:
    """ngx.req.get_uri_args as fix_mmap sends it: ``a`` (no ``=``) is ``true`` -> ``[]``."""
    out: dict[str, list[str]] = {}
    for part in qs.split("&") if qs else []:
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            out.setdefault(unquote(k.replace("+", " ")), []).append(unquote(v.replace("+", " ")))
        else:
            out.setdefault(unquote(part.replace("+", " ")), [])
    return out


@dataclass
class Req:
    """Everything Kong keeps per request (ngx.var, ngx.ctx, headers_in, kong.ctx.shared...)."""
    request_id: str
    method: str
    scheme: str
    host: str
    server_port: int
    path: str
    query: str
    request_uri: str
    http_version: str
    client_ip: str
    client_port: int
    headers: list[list[str]]
    body: bytes
    started: float = field(default_factory=time.time)
    route: Route | None = None
    service: Service | None = None
    captures: dict = field(default_factory=dict)
    matched_path: str = ""
    consumer: Consumer | None = None
    credential: dict[str, Any] | None = None
    ctx_shared: dict[str, Any] = field(default_factory=dict)
    ngx_ctx: dict[str, Any] = field(default_factory=dict)
    upstream_path: str | None = None
    upstream_target: tuple[str, int] | None = None
    upstream_name: str | None = None
    upstream_uri: str = ""
    response_headers: list[list[str]] = field(default_factory=list)  # set before the response exists
    response: Response | None = None
    upstream_response: Response | None = None
    serialize_extra: dict[str, Any] = field(default_factory=dict)
    saved_serialize: dict[str, Any] | None = None  # plugin.lua build_phases: serialize_data
    phase: str = "rewrite"
    plugin: Plugin | None = None
    plugins_run: list[str] = field(default_factory=list)
    buffered: bool = False
    proxied: bool = False
    upstream_latency_ms: int | None = None
    proxy_latency_ms: int | None = None
    finished: float | None = None
    tries: list[dict[str, Any]] = field(default_factory=list)
    streamed_size: int = 0


def _log(req: Req, level: str, *args: Any) -> None:
    name = req.plugin.name if req.plugin else "core"
    msg = "".join(_hval(a) if not isinstance(a, (dict, list)) else orjson.dumps(a).decode() for a in args)
    sys.stderr.write(f"[standin] [{level}] [{name}] {msg}\n")
    sys.stderr.flush()


def _exit(req: Req, status: Any, body: Any = None, headers: Any = None) -> None:
    if req.phase not in ("rewrite", "access", "response"):
        raise PdkFailure(f"kong.response.exit is not allowed in the {req.phase} phase")
    if not isinstance(status, int):
        raise PdkFailure("code must be a number")
    hs = [list(h) for h in req.response_headers]
    has_ct = has_cl = False
    for k, v in (headers or {}).items():
        lk = k.lower().replace("_", "-")
        if lk == "transfer-encoding":
            continue
        header_set(hs, k, v)
        has_ct |= lk == "content-type"
        has_cl |= lk == "content-length"
    data: bytes | None
    if isinstance(body, (dict, list)):
        data = orjson.dumps(body)
        if not has_ct:
            header_set(hs, "Content-Type", JSON_CT)
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body
    if data is not None and has_cl:
        header_clear(hs, "Content-Length")
    req.response = Response(status, hs, data or b"", "exit")
    raise Exit()


def _error(req: Req, status: Any, message: Any = None, headers: Any = None) -> None:
    if isinstance(message, (dict, list)):
        message = orjson.dumps(message).decode()
    text = message if message is not None else HTTP_MESSAGES.get(status, f"The upstream server responded with {int(status)}")
    hs = dict(headers or {})
    if not any(k.lower() == "content-type" for k in hs):
        hs["Content-Type"] = JSON_CT
    _exit(req, status, ERROR_TEMPLATE % (text, req.request_id), hs)


def serialize(req: Req) -> dict[str, Any]:
    """kong/pdk/log.lua ``serialize`` (basic serializer shape)."""
    resp = req.response
    now = req.finished or time.time()
    auth = None
    if req.credential:
        auth = {"id": req.credential.get("id"), "consumer_id": (req.credential.get("consumer") or {}).get("id")}
    out: dict[str, Any] = {
        "request": {
            "id": req.request_id, "uri": req.request_uri, "url": f"{req.scheme}://{req.host}{req.request_uri}",
            "querystring": {k: (v[0] if len(v) == 1 else (v or True)) for k, v in query_multimap(req.query).items()},
            "method": req.method, "headers": {k: (v[0] if len(v) == 1 else v) for k, v in multimap(req.headers).items()},
            "size": len(req.body),
        },
        "upstream_uri": req.upstream_uri,
        "upstream_status": str(req.upstream_response.status) if req.upstream_response else "",
        "response": {
            "status": resp.status if resp else 0,
            "headers": {k: (v[0] if len(v) == 1 else v) for k, v in multimap(resp.headers if resp else []).items()},
            "size": (len(resp.body) if resp.body is not None else req.streamed_size) if resp else 0,
        },
        "tries": req.tries,
        "latencies": {"kong": req.proxy_latency_ms or 0, "proxy": req.upstream_latency_ms or -1,
                      "request": int((now - req.started) * 1000), "receive": 0},
        "client_ip": req.client_ip,
        "started_at": int(req.started * 1000),
        "source": resp.source if resp else "kong",
        "workspace": None, "workspace_name": "default",
    }
    if req.route:
        out["route"] = req.route.entity
    if req.service:
        out["service"] = req.service.entity
    if req.consumer:
        out["consumer"] = req.consumer.entity
    if auth:
        out["authenticated_entity"] = auth
    for key, value in req.serialize_extra.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p), dict) or p not in node else node[p]
        node[parts[-1]] = value
    return out


# lua_max_req_headers (kong/templates/kong_defaults.lua 198: 100): ngx.req.get_headers()'s default
# max (kong/globalpatches.lua 3.9.1 131-158)
MAX_REQ_HEADERS = int(os.environ.get("KONG_LUA_MAX_REQ_HEADERS") or 100)


def _capped(headers: list[list[str]], n: int) -> dict[str, list[str]]:
    return multimap(headers[:n])


def _get_headers(req: Req, max_headers: Any = None, *_: Any) -> dict[str, list[str]]:
    """kong/pdk/request.lua 3.9.1 664-679: at most ``lua_max_req_headers`` headers without a
    max, else 1 <= max <= 1000 (MIN_HEADERS/MAX_HEADERS, 54-55); in the log phase plugin.lua's
    exposed_api returns the headers saved when the log phase began (``req_get_headers()``,
    default max) whatever the max (plugin.lua 82-85, 166)."""
    if req.phase == "log":
        return _capped(req.headers, MAX_REQ_HEADERS)
    if max_headers is None:
        return _capped(req.headers, MAX_REQ_HEADERS)
    if isinstance(max_headers, bool) or not isinstance(max_headers, (int, float)):
        raise PdkFailure("max_headers must be a number")
    if max_headers < 1:
        raise PdkFailure("max_headers must be >= 1")
    if max_headers > 1000:
        raise PdkFailure("max_headers must be <= 1000")
    return _capped(req.headers, int(max_headers))


def _get_header(req: Req, name: Any) -> str | None:
    """kong/tools/http.lua 3.9.1 545-566: ``ngx.var.http_<name>`` (no cap); only a value holding
    ", " is looked up again in ``ngx.req.get_headers()`` (capped). In the log phase: the saved
    (capped) headers (plugin.lua 87-99)."""
    if not isinstance(name, str):
        raise PdkFailure("header name must be a string")
    if req.phase == "log":
        v = _capped(req.headers, MAX_REQ_HEADERS).get(name.lower().replace("_", "-"))
        return v[0] if v else None
    value = header_get(req.headers, name)
    if value is None or ", " not in value:
        return value
    v = _capped(req.headers, MAX_REQ_HEADERS).get(name.lower().replace("_", "-"))
    return v[0] if v else None


def _set_serialize_value(req: Req, key: Any, value: Any = None, options: Any = None) -> None:
    """kong/pdk/log.lua 3.9.1 set_serialize_value (636-662): appends {key, value, mode} to
    ngx.ctx.serialize_values, which serialize applies (dotted keys make nested tables). In an
    external plugin's log event ngx.ctx is a copy made when the log phase began (plugin.lua
    build_phases: ``ngx_ctx = clone(ngx.ctx)``): log plugins have serialized already."""
    if not isinstance(key, str):
        raise PdkFailure("key must be a string")
    mode = (options or {}).get("mode", "set") if isinstance(options, dict) else "set"
    if mode not in ("set", "add", "replace"):
        raise PdkFailure("mode must be 'set', 'add' or 'replace'")
    if req.phase == "log":
        return  # too late for every log plugin; serialize_data was saved before the event
    req.serialize_extra[key] = value


def _get_body(req: Req, mimetype: str | None = None, *_: Any) -> Any:
    ct = (mimetype or header_get(req.headers, "content-type") or "").split(";")[0].strip().lower()
    if ct == "application/json":
        try:
            return orjson.loads(req.body) if req.body else None
        except orjson.JSONDecodeError:
            return None
    if ct == "application/x-www-form-urlencoded":
        out: dict[str, Any] = {}
        for k, v in parse_qsl(req.body.decode("latin-1"), keep_blank_values=True):
            out[k] = [*out[k], v] if isinstance(out.get(k), list) else ([out[k], v] if k in out else v)
        return out
    return None  # Kong returns nil, "unsupported content type" (mp_rpc sends only the first value)


def _set_query(req: Req, args: Any) -> None:
    if not isinstance(args, dict):
        raise PdkFailure("args must be a table")
    pairs = []
    for k in sorted(args):
        v = args[k]
        for x in v if isinstance(v, list) else [v]:
            pairs.append(k if x is True else f"{quote(str(k))}={quote(_hval(x))}")
    req.query = "&".join(pairs)


def _service_response(req: Req) -> Response:
    if req.upstream_response is None:
        raise PdkFailure("no upstream response in this phase")
    return req.upstream_response


def _resp_headers(req: Req) -> list[list[str]]:
    return req.response.headers if req.response else req.response_headers


def _set_raw_body(req: Req, body: Any) -> None:
    if req.phase != "response" or req.response is None:
        raise PdkFailure("kong.response.set_raw_body is only available in the response phase here")
    req.response.body = body.encode() if isinstance(body, str) else bytes(body)


def _set_resp_header(req: Req, name: str, value: Any) -> None:
    header_set(_resp_headers(req), name, value)


def _nginx_var(req: Req, name: str) -> Any:
    simple = {"request_id": req.request_id, "remote_addr": req.client_ip, "remote_port": str(req.client_port),
              "host": req.host.split(":")[0], "http_host": req.host, "scheme": req.scheme,
              "server_port": str(req.server_port), "request_uri": req.request_uri, "uri": req.path,
              "args": req.query or None, "query_string": req.query or None, "request_method": req.method,
              "upstream_uri": req.upstream_uri, "server_protocol": f"HTTP/{req.http_version}",
              "request_length": str(len(req.body)), "kong_request_id": req.request_id}
    if name in simple:
        return simple[name]
    if name.startswith("http_"):
        return header_get(req.headers, name[5:])
    if name.startswith("arg_"):
        v = query_multimap(req.query).get(name[4:])
        return v[0] if v else None
    if name.startswith("cookie_"):
        for part in (header_get(req.headers, "cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name[7:]:
                return v
        return None
    return None


def _route_entity(req: Req) -> Any:
    return req.route.entity if req.route else None


def _authenticate(req: Req, consumer: Any = None, credential: Any = None) -> None:
    if consumer is None and credential is None:
        raise PdkFailure("either credential or consumer must be provided")
    req.consumer = Consumer(consumer["id"], consumer.get("username"), consumer.get("custom_id"), [], consumer) \
        if isinstance(consumer, dict) else None
    req.credential = credential


def _set_all(headers: list[list[str]], values: Any) -> None:
    if not isinstance(values, dict):
        raise PdkFailure("headers must be a table")
    for k, v in values.items():
        header_set(headers, k, v)


def _start_time_ms(req: Req) -> int:
    return int(req.started * 1000)


Method = Callable[..., Any]
METHODS: dict[str, Method] = {
    # kong.request (kong/pdk/request.lua)
    "kong.request.get_scheme": lambda r: r.scheme,
    "kong.request.get_host": lambda r: r.host.split(":")[0].lower(),
    "kong.request.get_port": lambda r: r.server_port,
    "kong.request.get_forwarded_scheme": lambda r: r.scheme,
    "kong.request.get_forwarded_host": lambda r: r.host.split(":")[0].lower(),
    "kong.request.get_forwarded_port": lambda r: r.server_port,
    "kong.request.get_forwarded_path": lambda r: r.path,
    "kong.request.get_forwarded_prefix": lambda r: None,
    "kong.request.get_http_version": lambda r: float(r.http_version),
    "kong.request.get_method": lambda r: r.method,
    "kong.request.get_path": lambda r: r.path,
    "kong.request.get_raw_path": lambda r: r.request_uri.split("?")[0],
    "kong.request.get_path_with_query": lambda r: r.request_uri,
    "kong.request.get_raw_query": lambda r: r.query,
    "kong.request.get_query_arg": lambda r, n: (lambda v: None if v is None else (v[0] if v else True))(
        query_multimap(r.query).get(n)),
    "kong.request.get_query": lambda r, *_: query_multimap(r.query),
    "kong.request.get_header": _get_header,
    "kong.request.get_headers": _get_headers,
    "kong.request.get_raw_body": lambda r: r.body,
    "kong.request.get_body": _get_body,
    "kong.request.get_start_time": _start_time_ms,
    "kong.request.get_uri_captures": lambda r: {
        "unnamed": [v for k, v in r.captures.items() if k.isdigit()],
        "named": {k: v for k, v in r.captures.items() if not k.isdigit()}},
    # kong.client (kong/pdk/client.lua)
    "kong.client.get_ip": lambda r: r.client_ip,
    "kong.client.get_forwarded_ip": lambda r: r.client_ip,
    "kong.client.get_port": lambda r: r.client_port,
    "kong.client.get_forwarded_port": lambda r: r.client_port,
    "kong.client.get_consumer": lambda r: r.consumer.entity if r.consumer else None,
    "kong.client.get_credential": lambda r: r.credential,
    "kong.client.get_consumer_groups": lambda r: (r.consumer.groups or None) if r.consumer else None,
    "kong.client.get_protocol": lambda r, *_: r.scheme,
    "kong.client.authenticate": _authenticate,
    # kong.router
    "kong.router.get_route": _route_entity,
    "kong.router.get_service": lambda r: r.service.entity if r.service else None,
    # kong.ctx / kong.nginx (plugin.lua exposed_api)
    "kong.ctx.shared.get": lambda r, k: r.ctx_shared.get(k),
    "kong.ctx.shared.set": lambda r, k, v=None: r.ctx_shared.__setitem__(k, v),
    "kong.nginx.get_ctx": lambda r, k: r.ngx_ctx.get(k),
    "kong.nginx.set_ctx": lambda r, k, v=None: r.ngx_ctx.__setitem__(k, v),
    "kong.nginx.get_var": _nginx_var,
    "kong.nginx.get_subsystem": lambda r: "http",
    "kong.nginx.req_start_time": lambda r: r.started,
    "kong.nginx.get_statistics": lambda r: {},
    # kong.service (kong/pdk/service.lua, service/request.lua)
    "kong.service.set_target": lambda r, host, port: setattr(r, "upstream_target", (str(host), int(port))),
    "kong.service.set_upstream": lambda r, name: setattr(r, "upstream_name", name) or True,
    "kong.service.request.set_header": lambda r, n, v: header_set(r.headers, n, v),
    "kong.service.request.add_header": lambda r, n, v: header_add(r.headers, n, v),
    "kong.service.request.clear_header": lambda r, n: header_clear(r.headers, n),
    "kong.service.request.set_headers": lambda r, hs: _set_all(r.headers, hs),
    "kong.service.request.set_raw_body": lambda r, b: setattr(r, "body", b.encode() if isinstance(b, str) else bytes(b)),
    "kong.service.request.set_body": lambda r, b, *_: setattr(r, "body", orjson.dumps(b)),
    "kong.service.request.set_path": lambda r, p: setattr(r, "upstream_path", p),
    "kong.service.request.set_raw_query": lambda r, q: setattr(r, "query", q),
    "kong.service.request.set_query": _set_query,
    "kong.service.request.set_method": lambda r, m: setattr(r, "method", m.upper()),
    "kong.service.request.set_scheme": lambda r, s: None,
    "kong.service.request.clear_query_arg": lambda r, n: setattr(r, "query", urlencode(
        [(k, v) for k, v in parse_qsl(r.query, keep_blank_values=True) if k != n])),
    # kong.service.response (response phase with buffered proxying)
    "kong.service.response.get_status": lambda r: _service_response(r).status,
    "kong.service.response.get_headers": lambda r, *_: multimap(_service_response(r).headers),
    "kong.service.response.get_header": lambda r, n: header_get(_service_response(r).headers, n),
    "kong.service.response.get_raw_body": lambda r: _service_response(r).body or b"",
    "kong.service.response.get_body": lambda r, *_: (lambda b: orjson.loads(b) if b else None)(_service_response(r).body),
    # kong.response (kong/pdk/response.lua)
    "kong.response.get_status": lambda r: r.response.status if r.response else 200,
    "kong.response.get_header": lambda r, n: header_get(_resp_headers(r), n),
    "kong.response.get_headers": lambda r, *_: multimap(_resp_headers(r)),
    "kong.response.get_source": lambda r: r.response.source if r.response else "exit",
    "kong.response.get_raw_body": lambda r: (r.response.body or b"") if r.response else b"",
    "kong.response.set_header": _set_resp_header,
    "kong.response.add_header": lambda r, n, v: header_add(_resp_headers(r), n, v),
    "kong.response.clear_header": lambda r, n: header_clear(_resp_headers(r), n),
    "kong.response.set_headers": lambda r, hs: _set_all(_resp_headers(r), hs),
    "kong.response.set_status": lambda r, s: setattr(r.response, "status", int(s)) if r.response else None,
    "kong.response.set_raw_body": _set_raw_body,
    "kong.response.exit": _exit,
    "kong.response.error": _error,
    # kong.log (kong/pdk/log.lua; serialize wrapped to JSON by plugin.lua exposed_api)
    "kong.log.serialize": lambda r, *_: orjson.dumps(
        r.saved_serialize if r.phase == "log" and r.saved_serialize is not None else serialize(r)).decode(),
    "kong.log.set_serialize_value": _set_serialize_value,
    # kong.plugin / kong.node / kong.ip
    "kong.plugin.get_id": lambda r: r.plugin.id if r.plugin else None,
    "kong.node.get_id": lambda r: NODE_ID,
    "kong.node.get_hostname": lambda r: __import__("socket").gethostname(),
    "kong.ip.is_trusted": lambda r, ip: False,
    "kong.version": lambda r: KONG_VERSION,
}
for _lvl in ("err", "warn", "notice", "info", "debug", "crit", "alert", "emerg"):
    METHODS[f"kong.log.{_lvl}"] = (lambda lvl: lambda r, *a: _log(r, lvl, *a))(_lvl)
METHODS["kong.log"] = METHODS["kong.log.notice"]

TERMINAL = {"kong.response.exit", "kong.response.error"}
# mp_rpc.lua get_step_method
STEP_METHODS = {
    "kong.client.get_credential": "plugin.StepCredential",
    "kong.client.load_consumer": "plugin.StepConsumer",
    "kong.client.get_consumer": "plugin.StepConsumer",
    "kong.client.authenticate": "plugin.StepCredential",
    "kong.node.get_memory_stats": "plugin.StepMemoryStats",
    "kong.router.get_route": "plugin.StepRoute",
    "kong.router.get_service": "plugin.StepService",
    "kong.request.get_query": "plugin.StepMultiMap",
    "kong.request.get_headers": "plugin.StepMultiMap",
    "kong.response.get_headers": "plugin.StepMultiMap",
    "kong.service.response.get_headers": "plugin.StepMultiMap",
}
