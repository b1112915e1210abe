"""``python -m aigw_dev.standin`` / ``aigw-kong``: run the Kong stand-in (NOT Kong; tests and dev only)."""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import atexit  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from email.parser import Parser  # noqa: E402
from io import BytesIO  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer, headers_factory  # noqa: E402

from .. import child_pythonpath  # noqa: E402
from .bundled import BUNDLED  # noqa: E402
from .config import ConfigError, PluginInfo, load  # noqa: E402
from .process import Supervisor, query_info, server_defs  # noqa: E402
from .proxy import Gateway  # noqa: E402
from .rpc import Pool, RpcClient  # noqa: E402

# nginx's request-head limits with Kong's defaults (kong.conf.default 3.9.1 1103-1111:
# client_header_buffer_size 1k, large_client_header_buffers 4 8k): a header line must fit in
# 8k and the head in the buffers; there is no header count limit (nginx answers 400 "Request
# Header Or Cookie Too Large" past those). pywsgi's http.client parser would refuse >100 headers.
LARGE_HEADER_BUFFER = 8 * 1024
MAX_HEAD = 1024 + 4 * LARGE_HEADER_BUFFER


class HeadTooLarge(ValueError):
    pass


def parse_head(fp: Any) -> Any:
    lines, total = [], 0
    while True:
        line = fp.readline(LARGE_HEADER_BUFFER + 1)
        total += len(line)
        if len(line) > LARGE_HEADER_BUFFER or total > MAX_HEAD:
            raise HeadTooLarge("Request Header Or Cookie Too Large")
        if line in (b"\r\n", b"\n", b""):
            break
        lines.append(line)
    msg = Parser(_class=type(headers_factory(BytesIO(b"\r\n")))).parsestr(b"".join(lines).decode("iso-8859-1"))
    msg.status = ""
    return msg


class RawHeadersHandler(WSGIHandler):
    """Keeps the request headers as received (order, case, repeats) for the PDK."""

    def MessageClass(self, fp: Any, *_: Any) -> Any:
        return parse_head(fp)

    def _handle_client_error(self, ex: Exception) -> Any:
        if isinstance(ex, HeadTooLarge):
            body = b"<html><head><title>400 Request Header Or Cookie Too Large</title></head></html>\r\n"
            return ("400", b"HTTP/1.1 400 Bad Request\r\nServer: kong/3.9.1\r\nContent-Type: text/html\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        return super()._handle_client_error(ex)

    def handle(self) -> None:
        # nginx's tcp_nodelay (on by default): without it pywsgi's separate header and
        # body writes wait on the client's delayed ACK, 40 ms per keep-alive request
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["standin.raw_headers"] = [(k, v) for k, v in self.headers.items()]
        env["REQUEST_URI"] = self.path
        return env


def _package_env() -> dict[str, str]:
    """Children must import ``aigw`` even when the package is not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = child_pythonpath(env.get("PYTHONPATH"))
    return env


def admin_app(gw: Gateway, ready: dict[str, bool]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        status, body = "404 Not Found", {"message": "Not found"}
        if path == "/status" and method == "GET":
            ok = ready["ok"]
            status = "200 OK" if ok else "503 Service Unavailable"
            body = {"ready": ok, "server": {"total_requests": gw.stats.requests}}
        elif path == "/_standin/stats" and method == "GET":
            status, body = "200 OK", gw.stats.snapshot()
        elif path == "/_standin/stats/reset" and method == "POST":
            with gw.stats.lock:
                gw.stats.reset()
            status, body = "200 OK", {"reset": True}
        elif path == "/_standin/instances" and method == "GET":
            # every plugin.StartInstance sent so far: plugin name and config (secrets masked)
            started = [{"name": n, "config": c} for pool in {id(r.pool): r.pool for r in gw.rpcs.values()}.values()
                       for n, c in pool.started]
            status, body = "200 OK", {"started": started}
        elif path == "/config" and method == "POST":
            # Kong DB-less (kong/api/routes/config.lua): the whole declarative config replaced
            try:
                raw = orjson.loads(environ["wsgi.input"].read() or b"{}")
                doc = yaml.safe_load(raw["config"]) if isinstance(raw.get("config"), str) else raw
                gw.reload(load(doc, gw.registry, dict(os.environ)))
                status, body = "201 Created", {"reloaded": True}
            except (ConfigError, ValueError, KeyError, TypeError) as exc:
                status, body = "400 Bad Request", {"message": f"declarative config is invalid: {exc}"}
        elif path == "/_standin/pluginserver" and method == "GET":
            sups = ready.get("supervisors") or []
            pids = {s.sd.name: s.pid() for s in sups} if sups else ready.get("pids", {})
            status, body = "200 OK", {"pids": pids, "sockets": ready.get("sockets", [])}
        data = orjson.dumps(body)
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="aigw-kong", description="Kong stand-in for tests (NOT Kong).")
    ap.add_argument("--config", required=True, help="declarative kong.yml (_format_version 3.0)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--admin-port", type=int, default=None)
    ap.add_argument("--plugins-dir", default="plugins")
    ap.add_argument("--prefix", default=None, help="directory for the plugin server socket")
    ap.add_argument("--strict-pdk", action="store_true", help="unimplemented PDK methods fail the request")
    ap.add_argument("--pdk-timeout", type=float, default=60.0, help="seconds to wait for each plugin server answer")
    args = ap.parse_args(argv)

    prefix = args.prefix or tempfile.mkdtemp(prefix="aigw-standin-")
    os.makedirs(prefix, exist_ok=True)
    env = _package_env()
    defs = server_defs(args.plugins_dir, prefix, env) if os.path.isdir(args.plugins_dir) else []
    registry: dict[str, PluginInfo] = dict(BUNDLED)
    for sd in defs:
        info = query_info(sd, env)
        registry[info.name] = info
    try:
        config = load(args.config, registry, dict(os.environ))
    except ConfigError as exc:
        sys.stderr.write(f"[standin] [crit] configuration error: {exc}\n")
        raise SystemExit(2) from None

    supervisors = [Supervisor(sd, env) for sd in defs if sd.start_cmd]
    # one RPC object per plugin (mp_rpc.lua new(plugin)) over one keepalive pool per socket
    pools: dict[str, Pool] = {}
    rpcs: dict[str, RpcClient] = {}
    for sd in defs:
        pool = pools.setdefault(sd.socket, Pool(sd.socket, args.pdk_timeout))
        rpcs[sd.name] = RpcClient(sd.socket, timeout=args.pdk_timeout, pool=pool)
    gw = Gateway(config, registry, rpcs, strict_pdk=args.strict_pdk)
    ready: dict[str, Any] = {"ok": False, "pids": {}}

    def shutdown(*_: Any) -> None:
        for s in supervisors:
            s.stop()
        os._exit(0)

    atexit.register(lambda: [s.stop() for s in supervisors])
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(shutdown))
    gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(shutdown))

    if args.admin_port is not None:
        admin = WSGIServer(("127.0.0.1", args.admin_port), admin_app(gw, ready), log=None)
        admin.start()
    for s in supervisors:
        s.start()
    # Kong serves as soon as nginx runs: worker 0 spawns the start command from a timer
    # (process.lua start_pluginservers) and nobody waits for the socket, so requests that come
    # first fail ("no such file or directory"). The stand-in does the same; readiness of the
    # plugin server is a separate check (aigw.pluginserver.answers, the compose healthcheck).
    ready["pids"] = {s.sd.name: s.pid() for s in supervisors}
    ready["sockets"] = sorted(pools)
    ready["supervisors"] = supervisors
    server = WSGIServer((args.host, args.port), gw, handler_class=RawHeadersHandler, log=None,
                        error_log=sys.stderr)
    server.start()
    ready["ok"] = True
    sys.stderr.write(f"[standin] proxy on http://{args.host}:{server.server_port} "
                     f"({len(config.routes)} routes, {len(config.plugins)} plugins; this is NOT Kong)\n")
    sys.stderr.flush()

    def refresh_pids() -> None:
        while True:
            ready["pids"] = {s.sd.name: s.pid() for s in supervisors}
            gevent.sleep(0.5)

    gevent.spawn(refresh_pids)
    server.serve_forever()


if __name__ == "__main__":
    main()
