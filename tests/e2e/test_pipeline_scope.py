"""The relay runs the plugin instance Kong picks for each request (route, service, consumer
scopes; kong/runloop/plugins_iterator.lua 3.9.1 lookup_cfg), found in the plugin server's
registry rather than through a PDK call per plugin (aigw/instances.py)."""
from __future__ import annotations

import requests

from aigw_dev.dev import demo_token

from .conftest import plugin_config

BETA_SECRET = "beta-jwt-secret-0123456789abcdef"


def _tight_tokens(doc, **scope):
    tokens = dict(plugin_config(doc, "ai-tokens"))
    tokens["limits"] = [{"scope": "consumer", "tokens": 5, "window": "minute"}]
    doc.setdefault("plugins", []).append({"name": "ai-tokens", **scope, "config": tokens})


def _beta(doc):
    doc["consumers"].append({"username": "beta-app", "custom_id": "beta-app",
                             "jwt_secrets": [{"key": "beta-app", "algorithm": "HS256",
                                              "secret": BETA_SECRET}]})


def _chat(gw, token, content="hello there, how are you today?"):
    return requests.post(gw.url + "/v1/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                         json={"model": "chat", "messages": [{"role": "user", "content": content}]})


def test_a_consumer_scoped_config_applies_to_that_consumer_only(make_gateway):
    def edit(doc):
        _beta(doc)
        _tight_tokens(doc, consumer="beta-app")

    gw = make_gateway(edit)
    beta = demo_token(BETA_SECRET, key="beta-app")
    for _ in range(2):  # also once the instances are known
        r = _chat(gw, beta)
        assert r.status_code in (400, 429), r.text
        assert r.json()["error"]["code"] in ("tokens_exceed_limit", "rate_limit_exceeded", "tokens")
        ok = _chat(gw, demo_token())
        assert ok.status_code == 200, ok.text  # demo-app keeps the service's ai-tokens
    # still only ai-router makes PDK calls: the consumer comes from its get_consumer
    gw.standin.reset_stats()
    _chat(gw, demo_token())
    calls = gw.standin.stats()["pdk_calls"]
    assert set(calls) == {"ai-router"} and sum(calls["ai-router"].values()) == 2, calls


def test_a_route_scoped_config_applies_on_its_route_only(make_gateway):
    def edit(doc):
        _tight_tokens(doc, route="openai-embeddings")

    gw = make_gateway(edit)
    headers = gw.headers()
    for _ in range(2):
        r = requests.post(gw.url + "/v1/embeddings", headers=headers, timeout=30,
                          json={"model": "text-embedding-3-small", "input": "a sentence of more than five tokens"})
        assert r.status_code in (400, 429), r.text
        assert _chat(gw, demo_token()).status_code == 200
    # the service-scoped ai-router does not know the request's route: one more PDK call
    gw.standin.reset_stats()
    _chat(gw, demo_token())
    calls = gw.standin.stats()["pdk_calls"]
    assert calls == {"ai-router": {"access": 3}}, calls


def _without_tight_tokens(doc):
    doc["plugins"] = [p for p in doc.get("plugins", []) if not (p["name"] == "ai-tokens" and p.get("consumer"))]


def test_a_changed_config_applies_at_once_and_a_deleted_plugin_once_it_is_stale(make_gateway):
    """Kong DB-less POST /config: every plugin gets a new __seq__, Kong starts new instances and
    closes the old ones of the same plugin id (plugin_servers/plugin.lua 258-299); a deleted
    plugin's instance is never closed, and stops applying after AIGW_INSTANCE_STALE_AFTER."""
    import copy
    import time

    gw = make_gateway(lambda doc: _tight_tokens(doc, consumer="demo-app"),
                      env={"AIGW_INSTANCE_STALE_AFTER": "1"})
    assert _chat(gw, demo_token()).status_code in (400, 429)
    # the same plugin (same id), limit raised: applies to the next request
    doc = copy.deepcopy(gw.doc)
    tight = next(p for p in doc["plugins"] if p["name"] == "ai-tokens" and p.get("consumer"))
    tight.setdefault("id", "9a1e6a53-3c47-4b59-9d1d-7f3a2f0c6a11")
    gw.standin.reload(doc)
    assert _chat(gw, demo_token()).status_code in (400, 429)  # same limit, new instance
    tight["config"]["limits"] = [{"scope": "consumer", "tokens": 100000, "window": "minute"}]
    gw.standin.reload(doc)
    assert _chat(gw, demo_token()).status_code == 200
    # back to the tight one, then deleted: the service's ai-tokens applies once it is stale
    tight["config"]["limits"] = [{"scope": "consumer", "tokens": 5, "window": "minute"}]
    gw.standin.reload(doc)
    assert _chat(gw, demo_token()).status_code in (400, 429)
    _without_tight_tokens(doc)
    gw.standin.reload(doc)
    time.sleep(1.5)
    assert _chat(gw, demo_token()).status_code == 200
