"""The proxy: phases, plugin iteration, external-plugin events and the upstream call.

- Plugin selection: kong/runloop/plugins_iterator.lua — for each plugin (priority order, highest
  first) the most specific config of route/service/consumer wins (``lookup_cfg``); the consumer
  is the one authenticated so far, so consumer-scoped configs apply after the auth plugins ran.
  rewrite runs global plugins only. Configs met while iterating access are collected for the
  response and log phases; a plugin with a ``response`` handler sets ``ctx.buffered_proxying``.
- Events: mp_rpc.lua ``bridge_loop``/``handle_event`` — HandleEvent, then answer each PDK call
  with the typed Step until ``Data == "ret"``; exit ends the loop and the request.
- log runs after the response has been sent, off the request path (plugin.lua ``build_phases``
  runs it in a timer with saved request data).
- Proxying, headers and errors: kong/runloop/handler.lua (X-Forwarded-*, X-Real-IP, Via,
  X-Kong-*-Latency, Server, X-Kong-Request-Id), kong/runloop/balancer (retries on connect
  failure, 503 without a peer), kong/init.lua ``Kong.response`` (buffered proxying).
"""
from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import gevent
import urllib3

from . import SERVER_TOKENS, bundled
from .config import Config, Plugin, PluginInfo
from .pdk import (
    ERROR_TEMPLATE,
    JSON_CT,
    METHODS,
    STEP_METHODS,
    TERMINAL,
    Exit,
    PdkFailure,
    Req,
    Response,
    header_get,
    header_set,
    serialize,
)
from .router import Balancer, Match, NoPeer, Router, upstream_path
from .rpc import RpcClient, RpcError

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
              "upgrade", "proxy-authenticate", "proxy-authorization", "content-length"}
PHASE_ORDER = ("rewrite", "access", "response", "log")


class Stats:
    def __init__(self, rpcs: dict[str, RpcClient] | None = None) -> None:
        self.lock = threading.Lock()
        self.rpcs = rpcs or {}
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.pdk_calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.events: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.unimplemented: list[str] = []
        self.rpc_errors = 0

    def snapshot(self) -> dict[str, Any]:
        return {"requests": self.requests,
                "pdk_calls": {p: dict(v) for p, v in self.pdk_calls.items()},
                "pdk_calls_total": sum(sum(v.values()) for v in self.pdk_calls.values()),
                "events": {p: dict(v) for p, v in self.events.items()},
                "unimplemented_pdk": list(self.unimplemented), "rpc_errors": self.rpc_errors,
                "misrouted_events": [m for p in {id(r.pool): r.pool for r in self.rpcs.values()}.values()
                                     for m in p.misrouted]}


def kong_error(req: Req, status: int, message: str) -> Response:
    """A Kong-generated error body (kong/tools/http.lua JSON template)."""
    body = (ERROR_TEMPLATE % (message, req.request_id)).encode()
    return Response(status, [["Content-Type", JSON_CT]], body, "error")


class Gateway:
    def __init__(self, config: Config, registry: dict[str, PluginInfo], rpcs: dict[str, RpcClient],
                 strict_pdk: bool = False):
        self.config = config
        self.registry = registry
        self.rpcs = rpcs  # pluginserver entry name -> client
        self.strict_pdk = strict_pdk
        self.stats = Stats(rpcs)
        self.http = urllib3.PoolManager(maxsize=64, block=False, retries=False)
        self.reload(config)

    def reload(self, config: Config) -> None:
        """A new declarative config (Kong DB-less ``POST /config``, kong/api/routes/config.lua):
        new router, balancers and plugin iterator; requests in flight keep the old ones."""
        combos: dict[str, dict[tuple, Plugin]] = defaultdict(dict)  # name -> {(route, service, consumer): Plugin}
        for p in config.plugins:
            if p.enabled:
                combos[p.name][(p.route_id, p.service_id, p.consumer_id)] = p
        self.router = Router(config)
        self.balancers = {name: Balancer(u) for name, u in config.upstreams.items()}
        self.combos = combos
        self.order = sorted(combos, key=lambda n: -self.registry[n].priority)
        self.config = config

    # ------------------------------------------------------------ plugin selection

    def lookup(self, name: str, route: str | None, service: str | None, consumer: str | None) -> Plugin | None:
        """plugins_iterator.lua lookup_cfg: most specific combination first."""
        combos = self.combos[name]
        keys = []
        if route and service and consumer:
            keys.append((route, service, consumer))
        if route and consumer:
            keys.append((route, None, consumer))
        if service and consumer:
            keys.append((None, service, consumer))
        if route and service:
            keys.append((route, service, None))
        if consumer:
            keys.append((None, None, consumer))
        if route:
            keys.append((route, None, None))
        if service:
            keys.append((None, service, None))
        keys.append((None, None, None))
        for key in keys:
            if key in combos:
                return combos[key]
        return None

    # ------------------------------------------------------------ events

    def run_plugin(self, req: Req, plugin: Plugin, phase: str) -> None:
        """Run one plugin's phase; raises Exit when it ended the request."""
        req.phase, req.plugin = phase, plugin
        if plugin.info.bundled:
            if phase == "access":
                bundled.run(plugin.name, req, self.config, plugin.config)
            return
        rpc = self.rpcs[plugin.info.server or ""]
        self.stats.events[plugin.name][phase] += 1
        # mp_rpc.lua 3.9.1 Rpc:handle_event (301-320): an error containing "no plugin instance"
        # resets the plugin's instances and retries (Kong without a bound; here 5 attempts)
        for attempt in range(5):
            try:
                iid = rpc.instance_id(plugin.name, plugin.config)
                self._bridge(req, rpc, iid, plugin, phase)
                return
            except RpcError as exc:
                if "no plugin instance" in str(exc).lower() and attempt < 4:
                    rpc.reset_plugin(plugin.name)
                    sys.stderr.write(f"[standin] [warn] [{plugin.name}] {exc}; restarting instance\n")
                    continue
                raise

    def _bridge(self, req: Req, rpc: RpcClient, iid: int, plugin: Plugin, phase: str) -> None:
        step = rpc.call("plugin.HandleEvent", {"InstanceId": iid, "EventName": phase})
        rpc.check_event(plugin.name, iid, step)
        event_id = step["EventId"]
        while step["Data"] != "ret":
            method, args = step["Data"]["Method"], step["Data"].get("Args") or []
            with self.stats.lock:
                self.stats.pdk_calls[plugin.name][phase] += 1
            fn = METHODS.get(method) or self._extra(method)
            if fn is None:
                if self.strict_pdk:
                    with self.stats.lock:
                        if method not in self.stats.unimplemented:
                            self.stats.unimplemented.append(method)
                    sys.stderr.write(f"[standin] [ERROR] [{plugin.name}] unimplemented PDK method {method} "
                                     f"(--strict-pdk): failing the request\n")
                    raise PdkFailure(f"unimplemented PDK method {method}")
                sys.stderr.write(f"[standin] [err] [{plugin.name}] could not find pdk method: {method}\n")
                result = None
            else:
                try:
                    result = fn(req, *args) if isinstance(args, list) else fn(req, args)
                except TypeError as exc:
                    raise PdkFailure(f"{method}: bad arguments: {exc}") from None
            if method in TERMINAL:  # not reached: exit raises Exit; kept for clarity
                return
            # mp_rpc.lua get_step_method; call_pdk_method only returns the first value, so Kong
            # never sends plugin.StepError from here (a nil result travels in plugin.Step)
            step = rpc.call(STEP_METHODS.get(method, "plugin.Step"), {"EventId": event_id, "Data": result})

    def _extra(self, method: str) -> Any:
        if method == "kong.client.load_consumer":
            def load_consumer(req: Req, ref: str, by_username: bool = False) -> Any:
                c = next((c for c in self.config.consumers if c.id == ref), None)
                if c is None and by_username:
                    c = next((c for c in self.config.consumers if c.username == ref), None)
                return c.entity if c else None
            return load_consumer
        return None

    # ------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        req = self._make_req(environ)
        with self.stats.lock:
            self.stats.requests += 1
        collected: list[Plugin] = []
        try:
            resp = self._handle(req, collected)
        except Exit:
            resp = req.response
        except (RpcError, PdkFailure) as exc:
            with self.stats.lock:
                self.stats.rpc_errors += 1
            name = req.plugin.name if req.plugin else "core"
            sys.stderr.write(f"[standin] [err] [{name}] {req.phase} failed: {exc}\n")
            resp = kong_error(req, 500, "An unexpected error occurred")
        assert resp is not None
        if isinstance(resp, _Streamed):
            start_response(resp.status_line, resp.headers)
            return _Body(resp.chunks, lambda: self._finish(req, collected))
        req.response = resp
        headers = self._exit_headers(req, resp)
        start_response(_status_line(resp.status), headers)
        return _Body(iter([resp.body or b""]), lambda: self._finish(req, collected))

    def _make_req(self, environ: dict[str, Any]) -> Req:
        raw_headers: list[list[str]] = [list(h) for h in environ.get("standin.raw_headers", [])]
        length = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read()
        path = environ.get("PATH_INFO", "/")
        raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or path
        query = environ.get("QUERY_STRING", "")
        host = header_get(raw_headers, "host") or environ.get("SERVER_NAME", "localhost")
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1").split("/")[-1]
        return Req(request_id=uuid.uuid4().hex, method=environ["REQUEST_METHOD"].upper(),
                   scheme=environ.get("wsgi.url_scheme", "http"), host=host,
                   server_port=int(environ.get("SERVER_PORT") or 80), path=path, query=query,
                   request_uri=raw_uri, http_version=proto, client_ip=environ.get("REMOTE_ADDR", ""),
                   client_port=int(environ.get("REMOTE_PORT") or 0), headers=raw_headers, body=body)

    def _handle(self, req: Req, collected: list[Plugin]) -> Response | _Streamed:
        # rewrite: global plugins only (plugins_iterator.lua; the route is not known yet)
        for name in self.order:
            p = self.combos[name].get((None, None, None))
            if p and "rewrite" in p.info.phases:
                self.run_plugin(req, p, "rewrite")
        match = self.router.match(req.method, req.host, req.path)
        if match is None:
            return kong_error(req, 404, "no Route matched with those values")
        req.route, req.service = match.route, match.route.service
        req.captures, req.matched_path = match.captures, match.matched_path
        # access, collecting configs for the later phases
        for name in self.order:
            p = self.lookup(name, req.route.id, req.service.id if req.service else None,
                            req.consumer.id if req.consumer else None)
            if p is None:
                continue
            collected.append(p)
            if "response" in p.info.phases:
                req.buffered = True
            if "access" in p.info.phases:
                req.plugins_run.append(name)
                self.run_plugin(req, p, "access")
        req.phase, req.plugin = "proxy", None
        if req.service is None:
            return kong_error(req, 500, "An unexpected error occurred")
        return self._proxy(req, collected)

    # ------------------------------------------------------------ upstream

    def _proxy(self, req: Req, collected: list[Plugin]) -> Response | _Streamed:
        svc = req.service
        assert svc is not None and req.route is not None
        req.upstream_uri = req.upstream_path or upstream_path(svc, _match_of(req), req.path, req.route.strip_path)
        if req.query:
            req.upstream_uri += "?" + req.query
        headers = self._upstream_headers(req)
        timeout = urllib3.Timeout(connect=svc.connect_timeout / 1000, read=svc.read_timeout / 1000)
        upstream_name = req.upstream_name or (svc.host if svc.host in self.balancers else None)
        tried: set[tuple[str, int]] = set()
        t_sent = time.time()
        resp = None
        for attempt in range(svc.retries + 1):
            if req.upstream_target:
                host, port, balancer, target = req.upstream_target[0], req.upstream_target[1], None, None
            elif upstream_name:
                balancer = self.balancers.get(upstream_name)
                if balancer is None:
                    return kong_error(req, 503, "failure to get a peer from the ring-balancer")
                try:
                    target = balancer.pick(tried)
                except NoPeer:
                    if resp is None and attempt == 0:
                        return kong_error(req, 503, "failure to get a peer from the ring-balancer")
                    break
                host, port = target.host, target.port
            else:
                host, port, balancer, target = svc.host, svc.port, None, None
            tried.add((host, port))
            if not req.route.preserve_host:
                default = 443 if svc.protocol == "https" else 80
                header_set(headers, "Host", host if port == default else f"{host}:{port}")
            url = f"{svc.protocol}://{_bracket(host)}:{port}{req.upstream_uri}"
            if attempt == 0:
                req.proxy_latency_ms = int((time.time() - req.started) * 1000)
            t_sent = time.time()
            try:
                resp = self.http.urlopen(req.method, url, body=req.body or None, headers=_hdict(headers),
                                         preload_content=False, decode_content=False, redirect=False,
                                         timeout=timeout, assert_same_host=False)
                req.tries.append({"ip": host, "port": port, "balancer_latency": 0})
                break
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError,
                    urllib3.exceptions.NameResolutionError, OSError) as exc:
                req.tries.append({"ip": host, "port": port, "error": type(exc).__name__})
                sys.stderr.write(f"[standin] [err] upstream {host}:{port} failed: {type(exc).__name__}\n")
                if balancer and target:
                    balancer.report_failure(target)
                resp = None
                if (req.upstream_target or not upstream_name) and attempt >= svc.retries:
                    break
                continue
            except urllib3.exceptions.ConnectTimeoutError as exc:  # NewConnectionError subclasses it
                req.tries.append({"ip": host, "port": port, "error": "timeout"})
                sys.stderr.write(f"[standin] [err] upstream connect timeout {host}:{port}: {exc}\n")
                return kong_error(req, 504, "The upstream server is timing out")
            except urllib3.exceptions.ReadTimeoutError:
                req.tries.append({"ip": host, "port": port, "error": "timeout"})
                return kong_error(req, 504, "The upstream server is timing out")
        if resp is None:
            return kong_error(req, 502, "An invalid response was received from the upstream server")
        req.proxied = True
        req.upstream_latency_ms = int((time.time() - t_sent) * 1000)
        up_headers = [[k, v] for k, v in resp.headers.iteritems() if k.lower() not in HOP_BY_HOP]
        if req.buffered:
            return self._buffered(req, resp, up_headers, collected)
        return self._streamed(req, resp, up_headers)

    def _upstream_headers(self, req: Req) -> list[list[str]]:
        """handler.lua/nginx template: hop-by-hop removed, X-Forwarded-*, X-Real-IP, request id."""
        hs = [list(h) for h in req.headers if h[0].lower() not in HOP_BY_HOP]
        xff = header_get(req.headers, "x-forwarded-for")
        header_set(hs, "X-Forwarded-For", f"{xff}, {req.client_ip}" if xff else req.client_ip)
        header_set(hs, "X-Forwarded-Proto", req.scheme)
        header_set(hs, "X-Forwarded-Host", req.host.split(":")[0])
        header_set(hs, "X-Forwarded-Port", str(req.server_port))
        header_set(hs, "X-Forwarded-Path", req.path)
        if req.route and req.route.strip_path and req.matched_path and req.matched_path != "/":
            header_set(hs, "X-Forwarded-Prefix", req.matched_path.rstrip("/"))
        header_set(hs, "X-Real-IP", req.client_ip)
        header_set(hs, "X-Kong-Request-Id", req.request_id)
        if req.body:
            header_set(hs, "Content-Length", str(len(req.body)))
        return hs

    def _kong_proxy_headers(self, req: Req, headers: list[list[str]]) -> None:
        """handler.lua header_filter ``after`` for proxied responses."""
        header_set(headers, "X-Kong-Upstream-Latency", str(req.upstream_latency_ms or 0))
        header_set(headers, "X-Kong-Proxy-Latency", str(req.proxy_latency_ms or 0))
        via = header_get(headers, "via")
        header_set(headers, "Via", f"{via}, 1.1 {SERVER_TOKENS}" if via else f"1.1 {SERVER_TOKENS}")
        if header_get(headers, "server") is None:
            header_set(headers, "Server", SERVER_TOKENS)
        header_set(headers, "X-Kong-Request-Id", req.request_id)

    def _exit_headers(self, req: Req, resp: Response) -> list[tuple[str, str]]:
        hs = [list(h) for h in resp.headers]
        if req.proxied:
            self._kong_proxy_headers(req, hs)
        else:
            header_set(hs, "X-Kong-Response-Latency", str(int((time.time() - req.started) * 1000)))
            header_set(hs, "Server", SERVER_TOKENS)
            header_set(hs, "X-Kong-Request-Id", req.request_id)
        header_set(hs, "Content-Length", str(len(resp.body or b"")))
        return [(k, v) for k, v in hs]

    def _buffered(self, req: Req, resp: Any, up_headers: list[list[str]], collected: list[Plugin]) -> Response:
        """init.lua Kong.response: read the whole body, run response handlers, then send."""
        try:
            body = resp.read()
        except urllib3.exceptions.ReadTimeoutError:
            return kong_error(req, 504, "The upstream server is timing out")
        except (urllib3.exceptions.ProtocolError, OSError):
            return kong_error(req, 502, "An invalid response was received from the upstream server")
        finally:
            resp.release_conn()
        req.upstream_response = Response(resp.status, [list(h) for h in up_headers], body, "service")
        headers = [list(h) for h in up_headers]
        for k, v in req.response_headers:
            header_set(headers, k, v)
        req.response = Response(resp.status, headers, body, "service")
        for p in collected:
            if "response" in p.info.phases:
                self.run_plugin(req, p, "response")
        req.phase, req.plugin = "header_filter", None
        return req.response

    def _streamed(self, req: Req, resp: Any, up_headers: list[list[str]]) -> _Streamed:
        headers = [list(h) for h in up_headers]
        for k, v in req.response_headers:
            header_set(headers, k, v)
        cl = resp.headers.get("content-length")
        if cl and not resp.chunked:
            header_set(headers, "Content-Length", cl)
        self._kong_proxy_headers(req, headers)
        req.response = Response(resp.status, headers, None, "service")
        req.upstream_response = Response(resp.status, up_headers, None, "service")
        req.phase = "body_filter"
        return _Streamed(_status_line(resp.status, resp.reason), [(k, v) for k, v in headers],
                         _relay(resp, req))

    # ------------------------------------------------------------ log

    def _finish(self, req: Req, collected: list[Plugin]) -> None:
        """The log phase (kong/init.lua Kong.log -> plugins_iterator, priority order). A bundled
        log plugin serializes right there; an external plugin's log handler only schedules a
        timer with the request data saved at that moment, serialize_data included
        (plugin_servers/plugin.lua 3.9.1 build_phases 144-181, timer at 152, serialize_data 163). So log plugins such as file-log
        carry what was set before the log phase, never what an external plugin sets in its
        log event (log_by_lua cannot yield: every timer runs after the whole log phase)."""
        req.finished = time.time()
        logs = [p for p in collected if "log" in p.info.phases]
        external = []
        req.phase = "log"
        for p in logs:
            if p.info.bundled:
                try:
                    bundled.run_log(p.name, req, p.config)
                except OSError as exc:
                    sys.stderr.write(f"[standin] [err] [{p.name}] {exc}\n")
            else:
                external.append(p)
        if external:
            req.saved_serialize = serialize(req)
            gevent.spawn(self._log_phase, req, external)

    def _log_phase(self, req: Req, plugins: list[Plugin]) -> None:
        for p in plugins:
            try:
                self.run_plugin(req, p, "log")
            except (Exit, RpcError, PdkFailure) as exc:
                sys.stderr.write(f"[standin] [err] [{p.name}] log phase failed: {exc}\n")


class _Streamed:
    def __init__(self, status_line: str, headers: list[tuple[str, str]], chunks: Iterator[bytes]):
        self.status_line, self.headers, self.chunks = status_line, headers, chunks


class _Body:
    """WSGI body whose ``close()`` (called once the response is sent) starts the log phase."""

    def __init__(self, chunks: Iterator[bytes], on_close: Any):
        self._chunks, self._on_close = chunks, on_close

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close:
                close()
        finally:
            self._on_close()


def _relay(resp: Any, req: Req) -> Iterator[bytes]:
    """Forward the upstream body chunk by chunk as it arrives (no buffering).

    When the client goes away mid-body, the upstream connection is closed, as nginx
    does with ``proxy_ignore_client_abort off`` (Kong's default), so the upstream
    sees the abort instead of writing into a pooled connection."""
    size = 0
    complete = False
    try:
        if resp.chunked and resp.supports_chunked_reads():
            chunks = resp.read_chunked(decode_content=False)
        else:
            chunks = iter(lambda: resp.read1(65536), b"")
        for chunk in chunks:
            if chunk:
                size += len(chunk)
                yield chunk
        complete = True
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        sys.stderr.write(f"[standin] [err] upstream body interrupted: {type(exc).__name__}\n")
    finally:
        req.streamed_size = size
        if complete:
            resp.release_conn()
        else:
            resp.close()


def _match_of(req: Req) -> Any:
    return Match(req.route, req.matched_path, req.captures)  # type: ignore[arg-type]


def _status_line(status: int, reason: str | None = None) -> str:
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    return f"{status} {reason}"


def _hdict(headers: list[list[str]]) -> urllib3.HTTPHeaderDict:
    h = urllib3.HTTPHeaderDict()
    for k, v in headers:
        h.add(k, v)
    return h


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
