"""Issue 13, smaller bugs: Anthropic error types, the unknown-model 404, JWT only from the
Authorization header, and the cost of broken and abandoned streams in logs and budgets."""
from __future__ import annotations

import time
import uuid

import orjson
import pytest
import requests

from aigw.cost.pricing import usd_to_micros
from aigw.limits import RedisLimiter, Rule
from aigw_dev.dev import demo_token

from .conftest import add_model, plugin_config, plugin_id

REDIS_URL = "redis://127.0.0.1:6379/0"
ANTHROPIC_TYPES = {"invalid_request_error", "authentication_error", "billing_error", "permission_error",
                   "not_found_error", "request_too_large", "rate_limit_error", "api_error", "timeout_error",
                   "overloaded_error"}


def _events(gw) -> list[dict]:
    out = []
    for line in gw.standin.logs().splitlines():
        if '"aigw.request"' in line and "{" in line:
            out.append(orjson.loads(line[line.index("{"):]))
    return out


def _wait(gw, pred, timeout: float = 10.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        evs = [e for e in _events(gw) if pred(e)]
        if evs:
            return evs[-1]
        time.sleep(0.05)
    raise AssertionError("no matching log event")


def test_unknown_model_404_does_not_echo_the_name(gateway):
    secret = "jane.doe@example.com-model-" + uuid.uuid4().hex
    for path, body in (("/v1/chat/completions", {"model": secret, "messages": [{"role": "user", "content": "x"}]}),
                       ("/v1/messages", {"model": secret, "max_tokens": 5,
                                         "messages": [{"role": "user", "content": "x"}]})):
        r = requests.post(gateway.url + path, headers={**gateway.headers(), "anthropic-version": "2023-06-01"},
                          json=body)
        assert r.status_code == 404
        assert secret not in r.text and "jane" not in r.text


def test_anthropic_errors_carry_anthropic_types(make_gateway):
    """A token-limit 429 and a budget 429 are typed ``tokens`` / ``insufficient_quota`` in the
    OpenAI format; on /v1/messages they are ``rate_limit_error``."""
    def edit(doc):
        plugin_config(doc, "ai-tokens")["limits"] = [{"scope": "consumer", "tokens": 60, "window": "minute"}]
    gw = make_gateway(edit)
    h = {**gw.headers(), "anthropic-version": "2023-06-01"}
    # a request that can never fit the limit is the client's to fix: 400, not retried (issue 14)
    r = requests.post(gw.url + "/v1/messages", headers=h, json={
        "model": "claude-sonnet", "max_tokens": 500, "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # requests that fit use the limit up; then 429, typed for each API
    small = {"model": "claude-sonnet", "max_tokens": 20, "messages": [{"role": "user", "content": "hello there"}]}
    seen = []
    for _ in range(20):
        r = requests.post(gw.url + "/v1/messages", headers=h, json=small)
        seen.append(r.status_code)
        if r.status_code != 200:
            break
    assert r.status_code == 429, seen
    assert r.json() == {"type": "error", "error": {"type": "rate_limit_error", "message": r.json()["error"]["message"]}}
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=small)
    assert r.status_code == 429 and r.json()["error"]["type"] == "tokens"
    # every other error the gateway makes on /v1/messages is typed from Anthropic's list
    for body, status in ((b"{", 400), (b'{"model": "claude-sonnet", "max_tokens": 5, "messages": "x"}', 400),
                         (b'{"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', 404)):
        r = requests.post(gw.url + "/v1/messages", headers=h, data=body)
        assert r.status_code == status and r.json()["error"]["type"] in ANTHROPIC_TYPES
    r = requests.post(gw.url + "/v1/messages", headers={"anthropic-version": "2023-06-01"}, json={})
    assert r.status_code == 401


def test_jwt_only_from_the_authorization_header(gateway):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    r = requests.post(gateway.url + "/v1/chat/completions", params={"jwt": demo_token()}, json=body)
    assert r.status_code == 401
    r = requests.post(gateway.url + "/v1/chat/completions", headers={"Cookie": f"jwt={demo_token()}"}, json=body)
    assert r.status_code == 401
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), json=body)
    assert r.status_code == 200


@pytest.fixture
def priced(make_gateway):
    prefix = f"aigw-test:{uuid.uuid4().hex[:8]}:"

    ids = {}

    def edit(doc):
        plugin_config(doc, "ai-tokens")["limits"] = [{"scope": "consumer", "tokens": 10 ** 9, "window": "minute"}]
        add_model(doc, "cut-model", [{"provider": "openai", "model": "gpt-fault-cut"}])
        add_model(doc, "slow-stream", [{"provider": "openai", "model": "gpt-stream-delay-300"}])
        ids["usd"] = plugin_id(doc, "ai-cost")  # the budget's counter is named after it
    gw = make_gateway(edit, env={"AIGW_REDIS_PREFIX": prefix})
    gw.limiter = RedisLimiter(REDIS_URL, prefix=prefix)
    gw.rule = Rule(f"usd:i.{ids['usd']}:consumer:demo-app:day", 50 * 10 ** 6, 86400)
    return gw


def _charged(gw, expect: int, timeout: float = 5.0) -> int:
    deadline = time.time() + timeout
    while gw.limiter.used(gw.rule) != expect and time.time() < deadline:
        time.sleep(0.05)
    return gw.limiter.used(gw.rule)


def test_broken_stream_logs_the_cost_it_was_charged(priced):
    gw = priced
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), stream=True, timeout=30, json={
        "model": "cut-model", "stream": True, "temperature": 0.7,
        "messages": [{"role": "user", "content": "REPLY:" + "many words here " * 10}]})
    assert r.status_code == 200
    text = r.text
    assert "stream_error" in text  # the stream ended with an error event
    ev = _wait(gw, lambda e: e.get("gen_ai.request.model") == "cut-model")
    assert ev["aigw.error"] == "stream_broken"
    assert ev["aigw.cost_usd"] and ev["aigw.cost_usd"] > 0
    assert ev["gen_ai.usage.output_tokens"] > 0
    assert _charged(gw, usd_to_micros(ev["aigw.cost_usd"])) == usd_to_micros(ev["aigw.cost_usd"])


def test_abandoned_stream_logs_the_cost_it_was_charged(priced):
    gw = priced
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), stream=True, timeout=30, json={
        "model": "slow-stream", "stream": True, "temperature": 0.7,
        "messages": [{"role": "user", "content": "REPLY:" + "a long answer that takes time " * 10}]})
    assert r.status_code == 200
    got = b""
    for chunk in r.iter_content(chunk_size=None):
        got += chunk
        if b'"content":"' in got and got.count(b"data:") >= 3:
            break
    r.close()  # the client goes away mid-stream
    ev = _wait(gw, lambda e: e.get("gen_ai.request.model") == "slow-stream", timeout=20)
    assert ev["aigw.error"] == "client_disconnected" and ev["http.response.status_code"] == 499
    assert ev["aigw.cost_usd"] and ev["aigw.cost_usd"] > 0
    assert _charged(gw, usd_to_micros(ev["aigw.cost_usd"])) == usd_to_micros(ev["aigw.cost_usd"])
