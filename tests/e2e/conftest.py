"""End-to-end fixtures: official SDK -> Kong stand-in -> real kong-python-pluginserver
(our plugins + relay) -> mock provider.

The gateway runs the reference ``kong/kong.yml``, changed only where a test
machine needs it: the "ai" service points at this test's relay port, and
per-test overrides (limits, cache policy...) are applied to plugin configs.
"""
from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigw_dev.dev import DEMO_JWT_SECRET, demo_token, gateway_env
from aigw_dev.mock.testing import MockProvider
from aigw_dev.standin.testing import StandIn, free_port

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())




def service(doc: dict[str, Any], name: str = "ai") -> dict[str, Any]:
    return next(s for s in doc["services"] if s["name"] == name)


def plugin_config(doc: dict[str, Any], name: str, svc: str = "ai") -> dict[str, Any]:
    return next(p for p in service(doc, svc)["plugins"] if p["name"] == name)["config"]


def plugin_id(doc: dict[str, Any], name: str, svc: str = "ai") -> str:
    """The plugin's Kong id, set explicitly when the file has none: ai-tokens and ai-cost
    name their Redis counters after it (``i.<id>``, aigw/gateway/limits.py). The same on
    every gateway built from the same file, as on Kong nodes sharing one config."""
    p = next(p for p in service(doc, svc)["plugins"] if p["name"] == name)
    return p.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"aigw-test/{svc}/{name}")))


def remove_plugin(doc: dict[str, Any], name: str, svc: str = "ai") -> None:
    s = service(doc, svc)
    s["plugins"] = [p for p in s["plugins"] if p["name"] != name]


def add_model(doc: dict[str, Any], name: str, targets: list[dict[str, Any]], **extra: Any) -> None:
    """Add a model to ai-router and price its targets in ai-router's price table (budgeted routes
    refuse unpriced models)."""
    plugin_config(doc, "ai-router")["models"].append({"name": name, "targets": targets, **extra})
    prices = plugin_config(doc, "ai-router").setdefault("prices", {})
    for t in targets:
        prices.setdefault(f"{t['provider']}/{t['model']}", {"input": 1.0, "output": 2.0})


def reference_config(relay_port: int) -> dict[str, Any]:
    doc = copy.deepcopy(REFERENCE)
    service(doc)["url"] = f"http://127.0.0.1:{relay_port}"
    return doc


class Gateway:
    """A running stand-in + plugin server + relay against a mock provider."""

    def __init__(self, mock: MockProvider, doc: dict[str, Any], env: dict[str, str] | None = None,
                 relay_port: int | None = None, plugins_dir: Path | None = None):
        self.mock = mock
        self.relay_port = relay_port or int(service(doc)["url"].rsplit(":", 1)[1])
        self.metrics_port = free_port()
        self.doc = doc
        e = gateway_env(mock.url)
        e.update({"AIGW_RELAY_PORT": str(self.relay_port), "AIGW_METRICS_PORT": str(self.metrics_port),
                  # each gateway its own Redis namespace, unless a test shares one on purpose
                  "AIGW_REDIS_PREFIX": f"aigw-test:{uuid.uuid4().hex[:8]}:"})
        e.update(env or {})
        self.standin = StandIn(doc, env=e, plugins_dir=plugins_dir or ROOT / "plugins")

    def __enter__(self) -> Gateway:
        self.standin.__enter__()
        self.url = self.standin.url
        return self

    def __exit__(self, *exc) -> None:
        self.standin.__exit__(*exc)

    # clients -------------------------------------------------------------
    def openai(self, **kw):
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", demo_token()),
                             max_retries=kw.pop("max_retries", 0), **kw)

    def anthropic(self, **kw):
        import anthropic
        return anthropic.Anthropic(base_url=self.url, api_key=kw.pop("api_key", demo_token()),
                                   max_retries=0, **kw)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {demo_token()}", "Content-Type": "application/json"}


@pytest.fixture(scope="session")
def mock():
    with MockProvider() as m:
        yield m


@pytest.fixture(scope="session")
def gateway(mock):
    """The reference kong.yml as shipped (local cache/limits go to the real Redis)."""
    doc = reference_config(free_port())
    with Gateway(mock, doc) as gw:
        yield gw


@pytest.fixture
def make_gateway(mock) -> Callable[..., Gateway]:
    """Build a gateway from a modified reference config: ``make_gateway(edit)``."""
    started: list[Gateway] = []

    def make(edit: Callable[[dict[str, Any]], None] | None = None, env: dict[str, str] | None = None,
             relay_port: int | None = None, doc: dict[str, Any] | None = None,
             plugins_dir: Path | None = None) -> Gateway:
        d = doc or reference_config(relay_port or free_port())
        if relay_port:
            service(d)["url"] = f"http://127.0.0.1:{relay_port}"
        if edit:
            edit(d)
        gw = Gateway(mock, d, env=env, relay_port=relay_port or int(service(d)["url"].rsplit(":", 1)[1]),
                     plugins_dir=plugins_dir)
        gw.__enter__()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.__exit__(None, None, None)


def burst(gws: list[Gateway], body: dict[str, Any], n: int,
          bodies: list[dict[str, Any]] | None = None) -> list[Any]:
    """Send ``n`` chat requests at once (``body``, or ``bodies[i]`` for request i),
    alternating over the gateways.

    Every client connects first (one keep-alive session each) and all requests are
    released together by a barrier, so the burst is only the requests themselves."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests
    sessions = [requests.Session() for _ in range(n)]
    for i, s in enumerate(sessions):
        s.get(gws[i % len(gws)].url + "/v1/models", headers=gws[i % len(gws)].headers())
    start = threading.Barrier(n)

    def call(i: int):
        gw = gws[i % len(gws)]
        start.wait()
        return sessions[i].post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                                json=bodies[i] if bodies is not None else body, timeout=60)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


__all__ = ["Gateway", "add_model", "burst", "DEMO_JWT_SECRET", "demo_token", "plugin_config", "plugin_id",
           "remove_plugin", "service", "unique", "free_port"]
