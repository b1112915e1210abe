"""Issue 8: ai-cache end to end (official SDKs -> stand-in -> plugin server + relay -> mock).

The reference kong.yml enables ai-cache with policy redis, ttl 300, partition_by
consumer; only deterministic requests (temperature 0) are cached by default.
"""
from __future__ import annotations

import json
import time
from typing import Any

import jwt as pyjwt
import pytest
import redis
import requests

from aigw.limits import RedisLimiter, Rule

from .conftest import add_model, free_port, plugin_config, plugin_id, unique

REDIS_URL = "redis://127.0.0.1:6379/0"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather for a city",
                    "input_schema": TOOLS[0]["function"]["parameters"]}]
T0 = {"temperature": 0}  # anthropic SDK 2.x has no temperature parameter
OTHER_SECRET = "other-secret-0123456789abcdef0123456789"


# ----------------------------------------------------------------- helpers
def _r() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def _prefix(gw) -> str:
    return gw.standin.env["AIGW_REDIS_PREFIX"]


def stored(gw, cache_key_header: str) -> bytes | None:
    """The raw Redis value of the entry whose X-Cache-Key is given (None if absent)."""
    pattern = f"{_prefix(gw)}cache:*:{cache_key_header}*"
    keys = list(_r().scan_iter(match=pattern, count=1000))
    assert len(keys) <= 1
    return _r().get(keys[0]) if keys else None


def wait_stored(gw, cache_key_header: str, timeout: float = 5.0) -> bytes:
    """The relay stores after the body went out: wait for the write (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = stored(gw, cache_key_header)
        if raw is not None:
            return raw
        time.sleep(0.02)
    raise AssertionError("the answer was never stored")


def chat(gw, content: str, token: str | None = None, headers: dict[str, str] | None = None,
         **body: Any) -> requests.Response:
    h = gw.headers()
    if token:
        h["Authorization"] = f"Bearer {token}"
    body.setdefault("model", "chat")
    body.setdefault("temperature", 0)
    return requests.post(gw.url + "/v1/chat/completions", headers={**h, **(headers or {})},
                         json={"messages": [{"role": "user", "content": content}], **body})


def text(r: requests.Response) -> str:
    return r.json()["choices"][0]["message"]["content"]


def add_consumer(doc: dict[str, Any], name: str = "other-app", secret: str = OTHER_SECRET) -> None:
    doc["consumers"].append({"username": name, "jwt_secrets": [
        {"key": name, "algorithm": "HS256", "secret": secret}]})


def token_for(name: str = "other-app", secret: str = OTHER_SECRET) -> str:
    return pyjwt.encode({"iss": name, "exp": 4102444800}, secret, algorithm="HS256")


def new_requests(mock, before: int) -> list[dict[str, Any]]:
    return mock.requests()[before:]


# ------------------------------------------------------------ 1. statuses
def test_miss_then_hit_and_upstream_called_once(gateway, mock):
    prompt = unique("miss-hit")
    n0 = len(mock.requests())
    r1 = chat(gateway, prompt)
    assert r1.status_code == 200 and r1.headers["X-Cache-Status"] == "Miss"
    key = r1.headers["X-Cache-Key"]
    assert len(key) == 32 and int(key, 16) >= 0          # opaque hex, not the prompt
    assert "X-Cache-Age" not in r1.headers
    wait_stored(gateway, key)
    r2 = chat(gateway, prompt)
    assert r2.status_code == 200 and r2.headers["X-Cache-Status"] == "Hit"
    assert r2.headers["X-Cache-Key"] == key
    assert int(r2.headers["X-Cache-Age"]) >= 0
    assert text(r2) == text(r1) == f"Echo: {prompt}"
    assert r2.headers["X-AI-Model"] == r1.headers["X-AI-Model"]
    # a hit makes no upstream attempt
    assert "X-AI-Attempts" not in r2.headers and r1.headers["X-AI-Attempts"] == "1"
    calls = new_requests(mock, n0)
    assert len(calls) == 1 and calls[0]["body"]["messages"][-1]["content"] == prompt
    # a different prompt is a different key
    r3 = chat(gateway, prompt + " other")
    assert r3.headers["X-Cache-Status"] == "Miss" and r3.headers["X-Cache-Key"] != key


@pytest.mark.parametrize("body,headers,reason", [
    ({"temperature": 0.7}, {}, "temperature != 0"),
    ({"temperature": None}, {}, "temperature absent (provider default)"),
    ({}, {"Cache-Control": "no-store"}, "no-store"),
    ({}, {"Cache-Control": "max-age=0, No-Store"}, "no-store among directives"),
])
def test_bypass(gateway, mock, body, headers, reason):
    prompt = unique("bypass")
    b = dict(body)
    if b.get("temperature", 0) is None:
        b.pop("temperature")
        payload = {"model": "chat", "messages": [{"role": "user", "content": prompt}]}
        def send():
            return requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(),
                                 json=payload)
    else:
        def send():
            return chat(gateway, prompt, headers=headers, **b)
    n0 = len(mock.requests())
    for _ in range(2):
        r = send()
        assert r.status_code == 200, reason
        assert r.headers["X-Cache-Status"] == "Bypass", reason
        assert "X-Cache-Key" not in r.headers
    assert len(new_requests(mock, n0)) == 2, reason   # both went upstream


def test_no_store_is_not_stored_even_after_a_hit_exists(gateway, mock):
    prompt = unique("nostore")
    r1 = chat(gateway, prompt, headers={"Cache-Control": "no-store"})
    assert r1.headers["X-Cache-Status"] == "Bypass"
    r2 = chat(gateway, prompt)
    assert r2.headers["X-Cache-Status"] == "Miss"     # the no-store answer was not kept


def test_no_cache_refreshes(gateway, mock):
    prompt = unique("refresh")
    n0 = len(mock.requests())
    r1 = chat(gateway, prompt)
    key = r1.headers["X-Cache-Key"]
    first = json.loads(wait_stored(gateway, key))
    r2 = chat(gateway, prompt, headers={"Cache-Control": "no-cache"})
    assert r2.status_code == 200 and r2.headers["X-Cache-Status"] == "Refresh"
    assert r2.headers["X-Cache-Key"] == key
    assert r2.headers["X-AI-Attempts"] == "1"          # went upstream
    assert len(new_requests(mock, n0)) == 2
    # ... and stored the fresh answer (the mock's ids count up, so it differs)
    deadline = time.monotonic() + 5
    while json.loads(stored(gateway, key))["response"]["id"] == first["response"]["id"]:
        assert time.monotonic() < deadline, "the refreshed answer was not stored"
        time.sleep(0.02)
    assert json.loads(stored(gateway, key))["response"]["id"] == r2.json()["id"]
    r3 = chat(gateway, prompt, headers={"Pragma": "no-cache"})
    assert r3.headers["X-Cache-Status"] == "Refresh"
    r4 = chat(gateway, prompt)
    assert r4.headers["X-Cache-Status"] == "Hit"
    assert len(new_requests(mock, n0)) == 3


# ------------------------------------------------- 2. replay across forms
def test_non_stream_answer_replayed_as_stream_to_both_sdks(gateway, mock):
    prompt = unique("replay") + " " + "lorem ipsum dolor sit amet " * 6   # > one 48-char piece
    n0 = len(mock.requests())
    r1 = chat(gateway, prompt, max_tokens=200)
    assert r1.headers["X-Cache-Status"] == "Miss"
    wait_stored(gateway, r1.headers["X-Cache-Key"])
    expected = f"Echo: {prompt}"

    # OpenAI SDK, streaming, with usage
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="chat", temperature=0, max_tokens=200, stream=True,
        stream_options={"include_usage": True}, messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-cache-status"] == "Hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == expected and len(pieces) > 1           # really streamed in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(expected.split())
    assert chunks[-1].model_extra.get("cached") is True and chunks[-1].model_extra.get("cost") == 0

    # Anthropic SDK on /v1/messages, streaming (same canonical request -> same key)
    with gateway.anthropic().messages.stream(
            model="chat", max_tokens=200, extra_body=T0,
            messages=[{"role": "user", "content": prompt}]) as s:
        assert s.response.headers["x-cache-status"] == "Hit"
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got == expected and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(expected.split())
    # Anthropic SDK, non-stream
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="chat", max_tokens=200, extra_body=T0, messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-cache-status"] == "Hit" and raw.parse().content[0].text == expected
    assert len(new_requests(mock, n0)) == 1


def test_streamed_miss_replayed_non_stream(gateway, mock):
    prompt = unique("streamed") + " one two three four five six"
    n0 = len(mock.requests())
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="chat", temperature=0, stream=True, messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-cache-status"] == "Miss"
    streamed = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    key = raw.headers["x-cache-key"]
    entry = json.loads(wait_stored(gateway, key))
    assert entry["response"]["choices"][0]["message"]["content"] == streamed
    assert entry["usage"]["completion_tokens"] == len(streamed.split())   # usage kept with the stream
    r = gateway.openai().chat.completions.with_raw_response.create(
        model="chat", temperature=0, messages=[{"role": "user", "content": prompt}])
    assert r.headers["x-cache-status"] == "Hit" and r.headers["x-cache-key"] == key
    resp = r.parse()
    assert resp.choices[0].message.content == streamed == f"Echo: {prompt}"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == len(streamed.split())
    # and the Anthropic SDK gets it too
    msg = gateway.anthropic().messages.create(model="chat", max_tokens=1024, extra_body=T0,
                                              messages=[{"role": "user", "content": prompt}])
    assert msg.content[0].text == streamed
    assert len(new_requests(mock, n0)) == 2   # stream miss + (different max_tokens) anthropic miss


def test_tool_call_answers_replay_both_ways(gateway, mock):
    c = gateway.openai()
    prompt = "CALL_TOOL " + unique("tools")
    n0 = len(mock.requests())
    r1 = c.chat.completions.with_raw_response.create(
        model="chat", temperature=0, max_tokens=100, tools=TOOLS,
        messages=[{"role": "user", "content": prompt}])
    assert r1.headers["x-cache-status"] == "Miss"
    call = r1.parse().choices[0].message.tool_calls[0]
    wait_stored(gateway, r1.headers["x-cache-key"])
    # OpenAI SDK stream hit: tool-call deltas reassemble to the same call
    raw = c.chat.completions.with_raw_response.create(
        model="chat", temperature=0, max_tokens=100, tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-cache-status"] == "Hit"
    chunks = [ch for ch in raw.parse() if ch.choices]
    deltas = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == call.id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # Anthropic SDK stream hit: a tool_use block
    with gateway.anthropic().messages.stream(model="chat", max_tokens=100, extra_body=T0,
                                             tools=ANTHROPIC_TOOLS,
                                             messages=[{"role": "user", "content": prompt}]) as s:
        assert s.response.headers["x-cache-status"] == "Hit"
        final = s.get_final_message()
    block = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    assert len(new_requests(mock, n0)) == 1

    # and the other way: a streamed tool-call miss replayed non-stream
    prompt2 = "CALL_TOOL " + unique("tools2")
    raw = c.chat.completions.with_raw_response.create(
        model="chat", temperature=0, tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": prompt2}])
    assert raw.headers["x-cache-status"] == "Miss"
    list(raw.parse())
    wait_stored(gateway, raw.headers["x-cache-key"])
    r = c.chat.completions.with_raw_response.create(model="chat", temperature=0, tools=TOOLS,
                                                    messages=[{"role": "user", "content": prompt2}])
    assert r.headers["x-cache-status"] == "Hit"
    msg = r.parse().choices[0]
    assert msg.finish_reason == "tool_calls"
    assert msg.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.message.tool_calls[0].function.arguments) == {"city": "Paris"}


# ------------------------------------------------------- 3. hits are free
def test_hit_costs_nothing_and_charges_no_limit(make_gateway, mock):
    def edit(doc):
        # tight: a request reserves its prompt estimate (~65) + max_tokens 100 and fits in 250;
        # once reconciled to the mock's usage (64 + 62 words) another fresh one no longer fits
        plugin_config(doc, "ai-tokens")["limits"] = [{"scope": "consumer", "tokens": 250, "window": "hour"}]
        ids.update(tok=plugin_id(doc, "ai-tokens"), usd=plugin_id(doc, "ai-cost"))
    ids: dict[str, str] = {}
    gw = make_gateway(edit)
    prompt = unique("free") + " apple" * 60
    r1 = chat(gw, prompt, max_tokens=100)
    assert r1.status_code == 200 and r1.headers["X-Cache-Status"] == "Miss"
    assert float(r1.headers["X-AI-Cost-USD"]) > 0
    assert "X-AI-Tokens-Cached" not in r1.headers
    wait_stored(gw, r1.headers["X-Cache-Key"])
    limiter = RedisLimiter(REDIS_URL, _prefix(gw))
    tok = Rule(f"tok:i.{ids['tok']}:consumer:demo-app:hour", 250, 3600)
    usd = Rule(f"usd:i.{ids['usd']}:consumer:demo-app:day", 50_000_000, 86400)

    def usage_now() -> tuple[int, int]:
        return limiter.used(tok), limiter.used(usd)

    # reconciliation runs after the response went out: wait until it settled
    deadline = time.monotonic() + 5
    while usage_now()[0] != int(r1.headers["X-AI-Total-Tokens"]):
        assert time.monotonic() < deadline, "the miss was never reconciled"
        time.sleep(0.02)
    before = usage_now()
    assert before[1] > 0
    for _ in range(3):
        r = chat(gw, prompt, max_tokens=100)
        assert r.status_code == 200 and r.headers["X-Cache-Status"] == "Hit"
        assert r.headers["X-AI-Cost-USD"] == "0"
        assert r.headers["X-AI-Tokens-Cached"] == "true"
        assert r.headers["X-AI-Total-Tokens"] == r1.headers["X-AI-Total-Tokens"]
        assert r.headers["X-AI-Prompt-Tokens"] == r1.headers["X-AI-Prompt-Tokens"]
        assert "x-ratelimit-remaining-tokens" not in r.headers   # nothing was reserved
    # a streamed hit is free too, and says so up front (usage is known before the first byte)
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="chat", temperature=0, max_tokens=100, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-cache-status"] == "Hit" and raw.headers["x-ai-cost-usd"] == "0"
    assert raw.headers["x-ai-tokens-cached"] == "true"
    assert raw.headers["x-ai-total-tokens"] == r1.headers["X-AI-Total-Tokens"]
    chunks = list(raw.parse())
    assert chunks[-1].model_extra.get("cost") == 0 and chunks[-1].model_extra.get("cached") is True
    assert chunks[-1].usage.total_tokens == int(r1.headers["X-AI-Total-Tokens"])
    time.sleep(0.2)  # let any (wrong) finish hook run before reading the counters
    assert usage_now() == before
    # the limit really is tight: a request that is not a hit is refused
    r = chat(gw, unique("not-cached") + " apple" * 60, max_tokens=100)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"


def test_errors_and_cut_streams_are_never_stored(make_gateway, mock):
    def edit(doc):
        add_model(doc, "broken", [{"provider": "openai", "model": "gpt-fault-400"}])
        add_model(doc, "cutting", [{"provider": "openai", "model": "gpt-fault-cut"}])
    gw = make_gateway(edit)
    prompt = unique("errors") + " a reply long enough to be cut after two pieces"
    n0 = len(mock.requests())
    for _ in range(2):
        r = chat(gw, prompt, model="broken")
        assert r.status_code == 400 and r.headers["X-Cache-Status"] == "Miss"
    # a stream cut before its finish_reason is not stored ...
    with requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), stream=True, json={
            "model": "cutting", "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": prompt}]}) as r:
        assert r.headers["X-Cache-Status"] == "Miss"
        key = r.headers["X-Cache-Key"]
        body = r.content
    assert b"[DONE]" not in body
    time.sleep(0.3)  # let a (wrong) store land before checking
    assert stored(gw, key) is None
    # ... so the same request (stream is not part of the key) is a miss again, then stored
    r = chat(gw, prompt, model="cutting")
    assert r.status_code == 200 and r.headers["X-Cache-Status"] == "Miss" and r.headers["X-Cache-Key"] == key
    wait_stored(gw, key)
    assert chat(gw, prompt, model="cutting").headers["X-Cache-Status"] == "Hit"
    assert len(new_requests(mock, n0)) == 4


# --------------------------------------------- 4. tenants and redaction
def test_consumers_never_share_entries(make_gateway, mock):
    gw = make_gateway(add_consumer)
    other = token_for()
    prompt = unique("tenant")
    n0 = len(mock.requests())
    a1 = chat(gw, prompt)
    assert a1.headers["X-Cache-Status"] == "Miss"
    wait_stored(gw, a1.headers["X-Cache-Key"])
    assert chat(gw, prompt).headers["X-Cache-Status"] == "Hit"
    b1 = chat(gw, prompt, token=other)
    assert b1.status_code == 200 and b1.headers["X-Cache-Status"] == "Miss"
    assert b1.headers["X-Cache-Key"] != a1.headers["X-Cache-Key"]
    wait_stored(gw, b1.headers["X-Cache-Key"])
    assert chat(gw, prompt, token=other).headers["X-Cache-Status"] == "Hit"
    assert len(new_requests(mock, n0)) == 2   # the mock saw each consumer's first request
    # raw consumer names never appear in store keys
    keys = [k.decode() for k in _r().scan_iter(match=f"{_prefix(gw)}cache:*", count=1000)]
    assert len(keys) == 2 and not any("demo-app" in k or "other-app" in k for k in keys)


def test_redacted_prompts_share_a_key_but_each_gets_its_own_value(gateway, mock):
    tag = unique("pii")
    a, b = f"alice.{tag}@example.com", f"bob.{tag}@example.org"
    prompt = "please write to {} about the invoice " + tag
    n0 = len(mock.requests())
    r1 = chat(gateway, prompt.format(a))
    assert r1.headers["X-Cache-Status"] == "Miss"
    assert text(r1) == "Echo: " + prompt.format(a)             # own value restored
    # the provider saw the placeholder, never the address
    sent = new_requests(mock, n0)[0]["body"]["messages"][-1]["content"]
    assert sent == prompt.format("<EMAIL_1>")
    raw = wait_stored(gateway, r1.headers["X-Cache-Key"]).decode()
    assert "<EMAIL_1>" in raw and a not in raw and "example.com" not in raw   # stored un-restored

    r2 = chat(gateway, prompt.format(b))
    assert r2.headers["X-Cache-Status"] == "Hit"                  # same redacted prompt, same key
    assert r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    assert text(r2) == "Echo: " + prompt.format(b)               # its OWN address...
    assert a not in r2.text and "<EMAIL_1>" not in r2.text        # ...never alice's, no placeholder
    # streamed hit restores across chunk boundaries with the current request's map
    chunks = list(gateway.openai().chat.completions.create(
        model="chat", temperature=0, stream=True, messages=[{"role": "user", "content": prompt.format(b)}]))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "Echo: " + prompt.format(b)
    # and the first consumer still gets hers back
    r3 = chat(gateway, prompt.format(a))
    assert r3.headers["X-Cache-Status"] == "Hit" and text(r3) == "Echo: " + prompt.format(a)
    assert b not in r3.text
    assert len(new_requests(mock, n0)) == 1


# ------------------------------------------------------------- 5. expiry
def test_entries_expire(make_gateway, mock):
    gw = make_gateway(lambda doc: plugin_config(doc, "ai-cache").update(ttl=1))
    prompt = unique("ttl")
    r1 = chat(gw, prompt)
    assert r1.headers["X-Cache-Status"] == "Miss"
    key = r1.headers["X-Cache-Key"]
    wait_stored(gw, key)
    assert 0 < _r().pttl(next(_r().scan_iter(match=f"{_prefix(gw)}cache:*:{key}*"))) <= 1000
    assert chat(gw, prompt).headers["X-Cache-Status"] == "Hit"
    time.sleep(2.0)
    r3 = chat(gw, prompt)
    assert r3.headers["X-Cache-Status"] == "Miss" and r3.headers["X-Cache-Key"] == key


# ----------------------------------------------- 6. shared by two nodes
def test_two_gateways_share_redis(make_gateway, mock):
    shared = {"AIGW_REDIS_PREFIX": f"aigw-test:{unique('shared')}:"}
    g1 = make_gateway(env=shared)
    g2 = make_gateway(env=shared)
    assert g1.url != g2.url and g1.relay_port != g2.relay_port
    prompt = unique("nodes")
    n0 = len(mock.requests())
    r1 = chat(g1, prompt)
    assert r1.headers["X-Cache-Status"] == "Miss"
    wait_stored(g1, r1.headers["X-Cache-Key"])
    r2 = chat(g2, prompt)
    assert r2.headers["X-Cache-Status"] == "Hit"
    assert r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"] and text(r2) == text(r1)
    assert len(new_requests(mock, n0)) == 1
    # and back: a miss on the second node is a hit on the first
    s1 = chat(g2, prompt + " back")
    assert s1.headers["X-Cache-Status"] == "Miss"
    wait_stored(g2, s1.headers["X-Cache-Key"])
    assert chat(g1, prompt + " back").headers["X-Cache-Status"] == "Hit"


# -------------------------------------------------- 7. store failure
def test_cache_store_down_never_breaks_a_request(make_gateway, mock):
    dead = free_port()   # nothing listens here
    gw = make_gateway(lambda doc: plugin_config(doc, "ai-cache").update(
        redis_url=f"redis://127.0.0.1:{dead}/0"))
    prompt = unique("down")
    n0 = len(mock.requests())
    for _ in range(3):
        r = chat(gw, prompt)
        assert r.status_code == 200 and text(r) == f"Echo: {prompt}"
        assert r.headers["X-Cache-Status"] == "Bypass"
        assert float(r.headers["X-AI-Cost-USD"]) > 0       # served (and charged) upstream
    chunks = list(gw.openai().chat.completions.create(
        model="chat", temperature=0, stream=True, messages=[{"role": "user", "content": prompt}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Echo: {prompt}"
    # no-cache skips the lookup and then fails to store: still served
    r = chat(gw, prompt, headers={"Cache-Control": "no-cache"})
    assert r.status_code == 200 and text(r) == f"Echo: {prompt}"
    assert len(new_requests(mock, n0)) == 5
    assert str(dead) not in gw.standin.logs()               # the store's address is not logged
