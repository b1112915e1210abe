"""Issue 17 item 3: providers bedrock and vertex end to end.

official SDK -> stand-in -> plugin server -> relay -> SigV4 / google-auth -> mock.
The mock recomputes each SigV4 signature with the secret it expects and
accepts only OAuth tokens its own token endpoint issued to a service account,
so a request that is unsigned, signed wrongly or sent without a token fails.
"""
from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import add_model, plugin_config

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CLAUDE_BEDROCK = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(scope="module")
def service_account(tmp_path_factory, mock):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "acme", "private_key_id": "k1",
            "private_key": pem, "client_email": "gateway@acme.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": mock.url + "/token"}
    path = tmp_path_factory.mktemp("gcp") / "sa.json"
    path.write_text(json.dumps(info))
    return path


def _aws_env(tmp_path, secret="mock-key"):
    return {"AWS_ACCESS_KEY_ID": "AKIDGATEWAYTEST", "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}


def _edit(mock, service_account):
    def edit(doc):
        providers = plugin_config(doc, "ai-router")["providers"]
        providers.append({"name": "aws", "type": "bedrock", "base_url": mock.url,
                          "region": "eu-west-1"})
        providers.append({"name": "gcp", "type": "vertex", "base_url": mock.url,
                          "region": "europe-west4", "project": "acme",
                          "credentials_file": str(service_account)})
        add_model(doc, "claude-bedrock", [{"provider": "aws", "model": CLAUDE_BEDROCK}],
                  capabilities=["chat", "stream", "tools", "vision"])
        add_model(doc, "nova-bedrock", [{"provider": "aws", "model": "amazon.nova-lite-v1:0"}])
        add_model(doc, "gemini-vertex", [{"provider": "gcp", "model": "gemini-2.5-flash"}],
                  capabilities=["chat", "stream", "tools"])
        add_model(doc, "claude-vertex", [{"provider": "gcp", "model": "claude-sonnet-4@20250514"}],
                  capabilities=["chat", "stream", "tools"])
        add_model(doc, "bedrock-broken", [{"provider": "aws", "model": "m-fault-500"},
                                          {"provider": "gcp", "model": "gemini-2.5-flash"}])
        for name, provider, model in (("bedrock-cut", "aws", "amazon.nova-fault-cut"),
                                      ("vertex-cut", "gcp", "gemini-fault-cut"),
                                      ("vertex-claude-cut", "gcp", "claude-fault-cut"),
                                      ("bedrock-400", "aws", "amazon.nova-fault-400"),
                                      ("vertex-400", "gcp", "claude-fault-400")):
            add_model(doc, name, [{"provider": provider, "model": model}])
    return edit


@pytest.fixture(scope="module")
def cloud_gw(mock, service_account, tmp_path_factory):
    from .conftest import Gateway, free_port, reference_config
    doc = reference_config(free_port())
    _edit(mock, service_account)(doc)
    with Gateway(mock, doc, env=_aws_env(tmp_path_factory.mktemp("aws"))) as gw:
        yield gw


def _calls(mock, part):
    return [r for r in mock.requests() if part in r["path"]]


@pytest.mark.parametrize("model, part", [
    ("claude-bedrock", "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"),
    ("nova-bedrock", "/model/amazon.nova-lite-v1%3A0/converse"),
    ("gemini-vertex", "/publishers/google/models/gemini-2.5-flash:generateContent"),
    ("claude-vertex", "/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"),
])
def test_chat_via_openai_sdk(cloud_gw, mock, model, part):
    mock.clear()
    raw = cloud_gw.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "hi cloud"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "Echo: hi cloud"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 3
    call = _calls(mock, part)[-1]
    if "bedrock" in model:
        assert call["headers"]["authorization"].startswith(
            "AWS4-HMAC-SHA256 Credential=AKIDGATEWAYTEST/")
        assert "/eu-west-1/bedrock/aws4_request" in call["headers"]["authorization"]
    else:
        assert call["headers"]["authorization"].startswith("Bearer ya29.mock-")
        assert "/projects/acme/locations/europe-west4/" in call["path"]
    # the client's gateway token never reaches the provider
    assert "mock-key" not in json.dumps(call["headers"])


@pytest.mark.parametrize("model", ["claude-bedrock", "nova-bedrock", "gemini-vertex",
                                   "claude-vertex"])
def test_stream_via_openai_sdk(cloud_gw, model):
    chunks = list(cloud_gw.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "stream it"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream it"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize("model", ["claude-bedrock", "gemini-vertex", "claude-vertex"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls(cloud_gw, model, stream):
    client = cloud_gw.openai()
    msgs = [{"role": "user", "content": "CALL_TOOL please"}]
    if stream:
        calls: dict[int, dict] = {}
        finish = None
        for c in client.chat.completions.create(model=model, messages=msgs, tools=TOOLS,
                                                stream=True):
            for ch in c.choices:
                finish = ch.finish_reason or finish
                for tc in ch.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function and tc.function.name:
                        slot["name"] = tc.function.name
                    slot["args"] += (tc.function.arguments or "") if tc.function else ""
        assert finish == "tool_calls"
        assert [c["name"] for c in calls.values()] == ["get_weather"]
        assert json.loads(calls[0]["args"]) == {"city": "Paris"}
        call_id = calls[0]["id"]
    else:
        resp = client.chat.completions.create(model=model, messages=msgs, tools=TOOLS)
        assert resp.choices[0].finish_reason == "tool_calls"
        tc = resp.choices[0].message.tool_calls[0]
        assert tc.function.name == "get_weather"
        assert json.loads(tc.function.arguments) == {"city": "Paris"}
        call_id = tc.id
    # the tool result goes back in the provider's own shape and the model answers
    follow = client.chat.completions.create(model=model, tools=TOOLS, messages=msgs + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
        {"role": "user", "content": "thanks"}])
    assert follow.choices[0].message.content == "Echo: thanks"


def test_anthropic_sdk_to_bedrock_and_vertex(cloud_gw):
    client = cloud_gw.anthropic()
    for model in ("claude-bedrock", "claude-vertex"):
        msg = client.messages.create(model=model, max_tokens=50,
                                     messages=[{"role": "user", "content": "hi anthropic"}])
        assert msg.content[0].text == "Echo: hi anthropic"
        with client.messages.stream(model=model, max_tokens=50,
                                    messages=[{"role": "user", "content": "streamed"}]) as s:
            assert "".join(s.text_stream) == "Echo: streamed"


def test_vertex_token_is_fetched_once_and_reused(cloud_gw, mock):
    client = cloud_gw.openai()
    client.chat.completions.create(model="gemini-vertex",
                                   messages=[{"role": "user", "content": "warm"}])
    mock.clear()
    for i in range(5):
        client.chat.completions.create(model="gemini-vertex",
                                       messages=[{"role": "user", "content": f"n{i}"}])
    assert _calls(mock, "/token") == []
    tokens = {r["headers"]["authorization"] for r in _calls(mock, ":generateContent")}
    assert len(tokens) == 1


def test_provider_error_fails_over_from_bedrock_to_vertex(cloud_gw):
    raw = cloud_gw.openai().chat.completions.with_raw_response.create(
        model="bedrock-broken", messages=[{"role": "user", "content": "fail over"}])
    assert raw.parse().choices[0].message.content == "Echo: fail over"
    assert raw.headers["x-ai-provider"] == "gcp"


def test_client_mistakes_are_400_in_the_api_shape(cloud_gw):
    import openai
    client = cloud_gw.openai()
    with pytest.raises(openai.BadRequestError) as exc:  # Converse takes no image URLs
        client.chat.completions.create(model="claude-bedrock", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "base64" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:  # Converse has no tool_choice none
        client.chat.completions.create(model="claude-bedrock", tools=TOOLS, tool_choice="none",
                                       messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["param"] == "tool_choice"


def test_wrong_aws_secret_is_a_502_without_secrets(make_gateway, mock, service_account,
                                                   tmp_path):
    import openai
    gw = make_gateway(_edit(mock, service_account), env=_aws_env(tmp_path, "not-the-secret"))
    with pytest.raises(openai.APIStatusError) as exc:
        gw.openai().chat.completions.create(model="nova-bedrock",
                                            messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 502
    body = json.dumps(exc.value.body)
    assert "signature" in body.lower()
    assert "not-the-secret" not in body and "AKIDGATEWAYTEST" not in body


def test_missing_aws_credentials_fail_over_cleanly(make_gateway, mock, service_account,
                                                   tmp_path):
    import openai
    env = _aws_env(tmp_path)
    env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = ""
    gw = make_gateway(_edit(mock, service_account), env=env)
    with pytest.raises(openai.APIStatusError) as exc:
        gw.openai().chat.completions.create(model="nova-bedrock",
                                            messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 502
    assert "could not be authenticated" in exc.value.message
    # the second target of a failover model still serves
    resp = gw.openai().chat.completions.create(
        model="bedrock-broken", messages=[{"role": "user", "content": "still served"}])
    assert resp.choices[0].message.content == "Echo: still served"


@pytest.mark.parametrize("model", ["bedrock-cut", "vertex-cut", "vertex-claude-cut"])
def test_stream_cut_by_the_provider_ends_with_an_error_not_done(cloud_gw, model):
    import requests
    with requests.post(cloud_gw.url + "/v1/chat/completions", headers=cloud_gw.headers(),
                       stream=True, timeout=30, json={
                           "model": model, "stream": True,
                           "messages": [{"role": "user", "content": "a reply long enough to cut"}]}) as r:
        assert r.status_code == 200
        body = r.content
    assert b"Echo" in body  # what arrived before the cut was relayed
    assert b"[DONE]" not in body
    assert b'"error"' in body


@pytest.mark.parametrize("model", ["bedrock-400", "vertex-400"])
def test_provider_400_is_relayed_as_400(cloud_gw, model):
    import openai
    with pytest.raises(openai.BadRequestError) as exc:
        cloud_gw.openai().chat.completions.create(model=model,
                                                  messages=[{"role": "user", "content": "x"}])
    assert "mock fault 400" in exc.value.message
