"""Issue 8, second step: the semantic cache through the gateway (numpy MiniLM, offline)."""
from __future__ import annotations

import time

import jwt as pyjwt
import pytest
import requests

from .conftest import plugin_config

pytest.importorskip("safetensors")


def _semantic(doc):
    cfg = plugin_config(doc, "ai-cache")
    cfg.update({"policy": "memory", "semantic": {"enabled": True, "threshold": 0.8}})
    doc["consumers"].append({"username": "second", "jwt_secrets": [
        {"key": "second", "algorithm": "HS256", "secret": "second-secret-0123456789abcdef0123456"}]})


def _ask(gw, text, system="You are terse.", token=None):
    h = gw.headers() if token is None else {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return requests.post(gw.url + "/v1/chat/completions", headers=h, timeout=30, json={
        "model": "chat", "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]})


def _settle(gw, text, system="You are terse.", token=None, tries=40):
    """The relay stores after the answer went out: wait until a repeat is a hit."""
    for _ in range(tries):
        r = _ask(gw, text, system, token)
        if r.headers.get("x-cache-status") == "Hit":
            return r
        time.sleep(0.1)
    raise AssertionError("never stored")


def test_semantic_hit_within_partition_and_scope_only(make_gateway):
    gw = make_gateway(_semantic)
    gw.mock.clear()
    first = _ask(gw, "What is the weather like in Paris today?")
    assert first.status_code == 200 and first.headers["x-cache-status"] == "Miss"
    _settle(gw, "What is the weather like in Paris today?")
    upstream = len(gw.mock.requests())
    # a paraphrase: answered from the cache, with its similarity
    r = _ask(gw, "What's the weather like today in Paris?")
    assert r.headers["x-cache-status"] == "Hit", r.headers
    assert 0.8 <= float(r.headers["x-cache-similarity"]) < 1.0
    assert r.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert len(gw.mock.requests()) == upstream
    # an unrelated question misses
    assert _ask(gw, "How do I bake sourdough bread?").headers["x-cache-status"] == "Miss"
    # another system prompt: another scope, never matched
    assert _ask(gw, "What's the weather like today in Paris?", system="Answer in French.") \
        .headers["x-cache-status"] == "Miss"
    # another consumer: another partition, never matched
    other = pyjwt.encode({"iss": "second", "exp": 4102444800}, "second-secret-0123456789abcdef0123456",
                         algorithm="HS256")
    assert _ask(gw, "What's the weather like today in Paris?", token=other).headers["x-cache-status"] == "Miss"
