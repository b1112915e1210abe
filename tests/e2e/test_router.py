"""Issue 3: ai-router end to end with the official openai and anthropic SDKs."""
from __future__ import annotations

import collections
import json

import jwt as pyjwt
import openai
import pytest
import requests

from aigw_dev.dev import demo_token

from .conftest import add_model, plugin_config

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _last(mock):
    return mock.requests()[-1]


@pytest.mark.parametrize("model,provider,path_part", [
    ("claude-sonnet", "anthropic", "/v1/messages"),
    ("gemini-flash", "gemini", ":generateContent"),
    ("mistral-small", "mistral", "/v1/chat/completions"),
    ("gpt-4o-mini", "openai", "/v1/chat/completions"),
    ("llama-onprem", "vllm", "/v1/chat/completions"),
])
def test_each_provider_via_openai_sdk(gateway, mock, model, provider, path_part):
    mock.clear()
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "hi provider"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "Echo: hi provider"
    assert raw.headers["x-ai-provider"] == provider
    rec = _last(mock)
    assert path_part in rec["path"]
    # provider credential sent, client credential never forwarded
    hdrs = rec["headers"]
    assert "mock-key" in json.dumps(hdrs)
    assert demo_token().split(".")[0] not in json.dumps(hdrs)


@pytest.mark.parametrize("model", ["claude-sonnet", "gemini-flash", "mistral-small", "chat"])
def test_each_provider_streams_via_openai_sdk(gateway, model):
    chunks = list(gateway.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "stream it"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream it"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 3


def test_azure_target(make_gateway):
    def edit(doc):
        add_model(doc, "azure-only", [{"provider": "azure-eu", "model": "gpt-4o-deploy"}])
    gw = make_gateway(edit)
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="azure-only", messages=[{"role": "user", "content": "hi azure"}])
    assert raw.parse().choices[0].message.content == "Echo: hi azure"
    rec = _last(gw.mock)
    assert rec["path"].startswith("/openai/deployments/gpt-4o-deploy/chat/completions")
    assert rec["headers"].get("api-key") == "mock-key"
    assert "api-version" in rec["query"]


def test_alias_routing(gateway):
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="claude-sonnet-4", messages=[{"role": "user", "content": "alias"}])
    assert raw.headers["x-ai-provider"] == "anthropic"


def test_anthropic_sdk_to_openai_provider(gateway, mock):
    mock.clear()
    client = gateway.anthropic()
    msg = client.messages.create(model="gpt-4o-mini", max_tokens=100, system="be nice",
                                 messages=[{"role": "user", "content": "hello claude client"}])
    assert msg.content[0].text == "Echo: hello claude client"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 4  # mock: words in the reply
    rec = _last(mock)
    assert rec["path"] == "/v1/chat/completions"
    assert rec["body"]["messages"][0] == {"role": "system", "content": "be nice"}
    assert demo_token().split(".")[0] not in json.dumps(rec["headers"])


def test_anthropic_sdk_stream_to_openai_provider(gateway):
    client = gateway.anthropic()
    with client.messages.stream(model="gpt-4o-mini", max_tokens=100,
                                messages=[{"role": "user", "content": "stream claude client"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Echo: stream claude client"
    assert final.usage.output_tokens == 4


def test_anthropic_sdk_to_anthropic_provider(gateway):
    msg = gateway.anthropic().messages.create(model="claude-sonnet", max_tokens=50,
                                              messages=[{"role": "user", "content": "native"}])
    assert msg.content[0].text == "Echo: native"


@pytest.mark.parametrize("model", ["claude-sonnet", "gemini-flash", "chat"])
def test_tool_calls_through_openai_sdk(gateway, model):
    c = gateway.openai()
    r = c.chat.completions.create(model=model, tools=TOOLS,
                                  messages=[{"role": "user", "content": "CALL_TOOL please"}])
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    # stream: tool call deltas re-assembled
    chunks = list(c.chat.completions.create(model=model, tools=TOOLS, stream=True,
                                            messages=[{"role": "user", "content": "CALL_TOOL please"}]))
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []))
    assert json.loads(args) == {"city": "Paris"}
    # the tool result goes back and the conversation continues
    r2 = c.chat.completions.create(model=model, tools=TOOLS, messages=[
        {"role": "user", "content": "CALL_TOOL please"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert r2.choices[0].finish_reason == "stop"


def test_tool_use_through_anthropic_sdk(gateway):
    msg = gateway.anthropic().messages.create(
        model="chat", max_tokens=100, messages=[{"role": "user", "content": "CALL_TOOL now"}],
        tools=[{"name": "get_weather", "description": "w", "input_schema": TOOLS[0]["function"]["parameters"]}])
    block = next(b for b in msg.content if b.type == "tool_use")
    assert msg.stop_reason == "tool_use" and block.input == {"city": "Paris"}


def test_ab_split_ratio_and_stickiness(make_gateway):
    def edit(doc):
        add_model(doc, "ab", [
            {"provider": "openai", "model": "model-a", "weight": 80, "variant": "A"},
            {"provider": "mistral", "model": "model-b", "weight": 20, "variant": "B"}],
            sticky="header:x-user-id")
    gw = make_gateway(edit)
    s = requests.Session()
    h = gw.headers()
    counts = collections.Counter()
    first_variant = {}
    for i in range(1000):
        uid = f"user-{i % 500}"
        r = s.post(gw.url + "/v1/chat/completions", headers={**h, "x-user-id": uid},
                   json={"model": "ab", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200, r.text
        v = r.headers["x-ai-variant"]
        counts[v] += 1
        # the same user always lands on the same variant
        assert first_variant.setdefault(uid, v) == v
    share_a = counts["A"] / 1000
    assert 0.74 <= share_a <= 0.86, counts


@pytest.mark.parametrize("fault,expect_status", [("fault-500", 500), ("fault-429", 429)])
def test_failover_on_error_status(make_gateway, fault, expect_status):
    def edit(doc):
        add_model(doc, "fo", [{"provider": "openai", "model": f"gpt-{fault}"},
                              {"provider": "anthropic", "model": "claude-backup"}], strategy="priority")
    gw = make_gateway(edit)
    for stream in (False, True):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), stream=stream,
                          json={"model": "fo", "stream": stream, "messages": [{"role": "user", "content": "failover"}]})
        assert r.status_code == 200
        assert r.headers["x-ai-provider"] == "anthropic"
        assert r.headers["x-ai-attempts"] == "2"
        assert f"status:{expect_status}" in r.headers["x-ai-attempt-log"]
        assert "Echo: failover" in (r.text if not stream else "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in r.text.splitlines()
            if line.startswith("data: {") and json.loads(line[6:]).get("choices")))


def test_failover_on_slow_first_token(make_gateway, mock):
    def edit(doc):
        router = plugin_config(doc, "ai-router")
        router["providers"].append({"name": "slowpoke", "type": "openai", "base_url": "http://x.invalid/v1",
                                    "api_key": "{vault://env/openai-api-key}",
                                    "timeouts": {"connect": 1000, "first_byte": 400, "total": 5000}})
        add_model(doc, "slow", [{"provider": "slowpoke", "model": "gpt-slow-3000"},
                                {"provider": "mistral", "model": "mistral-small-latest"}], strategy="priority")
    gw = make_gateway(edit, env={"AIGW_PROVIDER_SLOWPOKE_BASE_URL": mock.url + "/v1"})
    for stream in (False, True):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=30,
                          json={"model": "slow", "stream": stream, "messages": [{"role": "user", "content": "s"}]})
        assert r.status_code == 200, r.text
        assert r.headers["x-ai-provider"] == "mistral"
        assert "slowpoke/gpt-slow-3000=" in r.headers["x-ai-attempt-log"]


def test_all_targets_failed(make_gateway):
    def edit(doc):
        add_model(doc, "broken", [{"provider": "openai", "model": "gpt-fault-500"},
                                  {"provider": "mistral", "model": "m-fault-503"}], strategy="priority")
        add_model(doc, "limited", [{"provider": "openai", "model": "gpt-fault-429"}])
    gw = make_gateway(edit)
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                      json={"model": "broken", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "upstream_unavailable" and "mistral" in err["message"]
    assert "mock-key" not in r.text and "127.0.0.1" not in r.text
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                      json={"model": "limited", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and r.headers.get("retry-after")


def test_circuit_breaker_skips_a_failing_target(make_gateway):
    def edit(doc):
        plugin_config(doc, "ai-router")["circuit_breaker"] = {"failures": 2, "cooldown": 60}
        add_model(doc, "cb", [{"provider": "openai", "model": "gpt-fault-500"},
                              {"provider": "mistral", "model": "mistral-small-latest"}], strategy="priority")
    gw = make_gateway(edit)
    logs = []
    for _ in range(4):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                          json={"model": "cb", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200
        logs.append(r.headers["x-ai-attempt-log"])
    # after two failures the broken target is moved behind the healthy one
    assert logs[0].startswith("openai/") and logs[-1].startswith("mistral/")


def test_model_allow_list_and_models_listing(make_gateway):
    def edit(doc):
        doc["consumers"].append({"username": "other-app", "jwt_secrets": [
            {"key": "other-app", "algorithm": "HS256", "secret": "other-secret-0123456789abcdef0123456789"}]})
    gw = make_gateway(edit)
    other = pyjwt.encode({"iss": "other-app", "exp": 4102444800}, "other-secret-0123456789abcdef0123456789",
                         algorithm="HS256")
    c = gw.openai(api_key=other)
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.create(model="llama-onprem", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_allowed"
    ids_other = {m.id for m in c.models.list()}
    ids_demo = {m.id for m in gw.openai().models.list()}
    assert "llama-onprem" in ids_demo and "llama-onprem" not in ids_other
    assert {"chat", "claude-sonnet"} <= ids_other


def test_error_cases_in_openai_format(gateway, mock):
    h = gateway.headers()
    url = gateway.url + "/v1/chat/completions"
    mock.clear()
    r = requests.post(url, headers=h, data=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = requests.post(url, headers=h, json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = requests.post(url, headers=h, json={"model": "chat", "messages": "not a list"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    big = "word " * 230000
    r = requests.post(url, headers=h, json={"model": "chat", "messages": [{"role": "user", "content": big}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert mock.requests() == []


def test_error_cases_in_anthropic_format(gateway):
    h = {"authorization": f"Bearer {demo_token()}", "anthropic-version": "2023-06-01",
         "content-type": "application/json"}
    r = requests.post(gateway.url + "/v1/messages", headers=h, data=b"{oops")
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    r = requests.post(gateway.url + "/v1/messages", headers=h,
                      json={"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_embeddings(gateway, mock):
    mock.clear()
    r = gateway.openai().embeddings.create(model="text-embedding-3-small", input=["a b c", "d e"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    assert r.usage.prompt_tokens > 0
    assert _last(mock)["path"] == "/v1/embeddings"


def test_consumer_group_allow_list(make_gateway):
    """Groups are Kong ACL groups (X-Consumer-Groups set by the acl plugin); a forged header is overwritten."""
    secret = "team-secret-0123456789abcdef0123456789"

    def edit(doc):
        doc["consumers"].append({"username": "team-bot", "acls": [{"group": "internal"}],
                                 "jwt_secrets": [{"key": "team-bot", "algorithm": "HS256", "secret": secret}]})
        doc["consumers"].append({"username": "blocked-bot", "acls": [{"group": "blocked"}], "jwt_secrets": [
            {"key": "blocked-bot", "algorithm": "HS256", "secret": secret}]})
        doc["consumers"].append({"username": "outsider", "jwt_secrets": [
            {"key": "outsider", "algorithm": "HS256", "secret": secret}]})
    gw = make_gateway(edit)
    team = gw.openai(api_key=pyjwt.encode({"iss": "team-bot", "exp": 4102444800}, secret, algorithm="HS256"))
    out = gw.openai(api_key=pyjwt.encode({"iss": "outsider", "exp": 4102444800}, secret, algorithm="HS256"))
    r = team.chat.completions.create(model="llama-onprem", messages=[{"role": "user", "content": "hi team"}])
    assert r.choices[0].message.content == "Echo: hi team"
    with pytest.raises(openai.PermissionDeniedError):
        out.chat.completions.create(model="llama-onprem", messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"X-Consumer-Groups": "internal"})
    assert "llama-onprem" in {m.id for m in team.models.list()}
    blocked = gw.openai(api_key=pyjwt.encode({"iss": "blocked-bot", "exp": 4102444800}, secret, algorithm="HS256"))
    with pytest.raises(openai.PermissionDeniedError) as e:
        blocked.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body is None or "cannot consume" in str(e.value)
