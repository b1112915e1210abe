"""The plugin-server work of one request, in this process, for cProfile.

    .venv/bin/python bench/inproc.py [-n 2000] [--profile] [--top 40]

Runs the five plugins' access handlers (ai-redact, ai-router, ai-cache, ai-tokens,
ai-cost: only ai-router's makes PDK calls) with a fake PDK that answers from memory, then
the relay's WSGI app (which runs each plugin's request side, then the call) against
the real mock provider (child process) and the real Redis, i.e. everything the
plugin server does per request except kong-pdk's RPC plumbing and the HTTP servers.
Prints µs per request (and a cProfile table with ``--profile``).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "devtools"))  # aigw_dev: the stand-in and the mock
sys.path.insert(0, str(ROOT / "bench"))

from gevent import monkey  # noqa: E402

monkey.patch_all()

from aigw import schema, vault  # noqa: E402
from aigw_dev.dev import demo_token, gateway_env  # noqa: E402
from aigw_dev.mock.testing import MockProvider  # noqa: E402

ORDER = ("ai-redact", "ai-router", "ai-cache", "ai-tokens", "ai-cost")


class FakeKong:
    """Just the PDK calls our plugins make, answered from memory (counted)."""

    def __init__(self, headers: dict[str, str], path: str, body: bytes, consumer: dict[str, Any]):
        self.calls = 0
        self.up_headers: dict[str, str] = {}
        outer = self

        class Request:
            def get_headers(self, *_):
                outer.calls += 1
                return {**{k: [v] for k, v in headers.items()}, **{k: [v] for k, v in outer.up_headers.items()}}

            def get_header(self, name):
                outer.calls += 1
                return self.get_headers().get(name.lower(), [None])[0]

            def get_path(self):
                outer.calls += 1
                return path

            def get_raw_body(self):
                outer.calls += 1
                return body

        class Client:
            def get_consumer(self):
                outer.calls += 1
                return consumer

        class SvcRequest:
            def set_header(self, k, v):
                outer.calls += 1
                outer.up_headers[k.lower()] = v

            def set_headers(self, hs):
                outer.calls += 1
                outer.up_headers.update({k.lower(): v for k, v in hs.items()})

        class Service:
            request = SvcRequest()

        class Response:
            def exit(self, status, body=None, headers=None):
                raise RuntimeError(f"exit {status}: {body[:200]!r}")

        self.request, self.client, self.service, self.response = Request(), Client(), Service(), Response()


def resolve(name: str, conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with its vault references resolved as Kong does (aigw/vault.py)."""
    conf = copy.deepcopy(conf)
    vault.resolve_fields(conf, schema.kong_fields(name), lambda ref, _path, _field: vault.resolve(ref, os.environ))
    return conf


def load_plugins(doc: dict[str, Any]) -> list[Any]:
    ai = next(s for s in doc["services"] if s["name"] == "ai")
    cfgs = {p["name"]: resolve(p["name"], p.get("config") or {}) if p["name"] in ORDER else p.get("config")
            for p in ai["plugins"]}
    out = []
    for name in ORDER:
        spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "plugins" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        cfg = {**cfgs[name], "__plugin_id": f"bench-{name}", "__seq__": 1}
        out.append(mod.Plugin(cfg))
    return out


SPLITS: dict[str, float] = {}


def _add(name: str, t0: float) -> float:
    t = time.process_time()
    SPLITS[name] = SPLITS.get(name, 0.0) + t - t0
    return t


def one(plugins: list[Any], headers: dict[str, str], body: bytes, consumer: dict[str, Any]) -> int:
    from aigw.relay.app import application

    kong = FakeKong(headers, "/v1/chat/completions", body, consumer)
    t = time.process_time()
    for p in plugins:
        p.access(kong)
        t = _add(p.NAME, t)
    # the request as Kong proxies it: the client's headers and body, plus the ticket
    environ = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    environ.update({"HTTP_X_AIGW_TICKET": kong.up_headers.get("x-aigw-ticket"), "wsgi.input": io.BytesIO(body),
                    "PATH_INFO": "/v1/chat/completions", "HTTP_X_FORWARDED_PATH": "/v1/chat/completions",
                    "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body))})
    status: list[str] = []
    it = application(environ, lambda s, h: status.append(s))
    for _ in it:
        pass
    t = _add("relay (to the response)", t)
    getattr(it, "close", lambda: None)()
    _add("relay close (finish hooks, log, metrics)", t)
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"relay answered {status}")
    return kong.calls


def main() -> None:
    import cProfile
    import pstats

    import run as bench_run

    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sort", default="tottime")
    args = ap.parse_args()
    with MockProvider(process=True, api_key=None) as mock:
        os.environ.update(gateway_env(mock.url))
        os.environ["AIGW_REDIS_PREFIX"] = f"aigw-bench:{uuid.uuid4().hex[:8]}:"
        os.environ["AIGW_RELAY_PORT"] = "0"
        plugins = load_plugins(bench_run.bench_config(0, mock.url))
        import logging
        logging.getLogger("aigw.access").setLevel(logging.WARNING)  # the log line is still built
        body = bench_run.chat_body()
        headers = {"authorization": f"Bearer {demo_token()}", "content-type": "application/json",
                   "x-consumer-username": "demo-app"}
        consumer = {"id": "c1", "username": "demo-app", "custom_id": "demo-app"}
        for _ in range(50):
            calls = one(plugins, headers, body, consumer)
        prof = cProfile.Profile() if args.profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        for _ in range(args.n):
            one(plugins, headers, body, consumer)
        if prof:
            prof.disable()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{dt / args.n * 1e6:.0f} µs per request wall (incl. waiting for the mock and Redis), "
              f"{cpu / args.n * 1e6:.0f} µs CPU, {calls} PDK calls")
        SPLITS.clear()
        for _ in range(args.n):
            one(plugins, headers, body, consumer)
        for k, v in SPLITS.items():
            print(f"  {k:<42} {v / args.n * 1e6:7.0f} µs CPU")
        if prof:
            pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
