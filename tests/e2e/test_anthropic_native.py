"""Issue 16: an Anthropic client to an Anthropic target passes through with every field
kept (cache_control, signed thinking, documents, anthropic-beta/version), the plugins
still apply, prompt-cache tokens are priced, and count_tokens answers in Anthropic format."""
from __future__ import annotations

import base64
import json

import anthropic
import pytest
import requests

from aigw.cost.pricing import PriceTable
from aigw_dev.dev import DEMO_API_KEY

TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]},
          "cache_control": {"type": "ephemeral"}}]
THINK = {"type": "enabled", "budget_tokens": 1024}


def _sent(mock, n0, path="/v1/messages"):
    return [r for r in mock.requests()[n0:] if r["path"] == path]


def test_cache_control_and_headers_reach_the_provider_and_cache_tokens_are_priced(gateway, mock):
    n0 = len(mock.requests())
    system = [{"type": "text", "text": "long stable system prompt", "cache_control": {"type": "ephemeral"}}]
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=100, system=system, tools=TOOLS, extra_body={"top_k": 5},
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello cache",
                                                "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11",
                       "anthropic-version": "2023-06-01"})
    msg = raw.parse()
    rec = _sent(mock, n0)[0]
    body = rec["body"]
    assert body["system"] == system and body["tools"] == TOOLS and body["top_k"] == 5
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["model"] == "claude-sonnet-4-20250514"
    assert rec["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11"
    assert rec["headers"]["anthropic-version"] == "2023-06-01"
    assert rec["headers"]["x-api-key"] == "mock-key"  # the provider's key, not the client's
    u = msg.usage
    assert u.cache_creation_input_tokens == 10 and u.cache_read_input_tokens > 0
    assert msg.model == "claude-sonnet"
    # priced with the cache rates of claude-sonnet-4 (write 3.75, read 0.3 per 1M)
    p = PriceTable.default().lookup("claude-sonnet-4-20250514")
    expected = (u.input_tokens * p.input + u.cache_read_input_tokens * p.cache_read
                + u.cache_creation_input_tokens * p.cache_write + u.output_tokens * p.output) / 1e6
    assert float(raw.headers["x-ai-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    full = (u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens) * p.input
    assert expected != pytest.approx((full + u.output_tokens * p.output) / 1e6)
    assert raw.headers["x-ai-cached-tokens"] == str(u.cache_read_input_tokens)
    assert int(raw.headers["x-ai-prompt-tokens"]) == (u.input_tokens + u.cache_read_input_tokens
                                                      + u.cache_creation_input_tokens)


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_with_tools_round_trips_its_signed_blocks(gateway, mock, stream):
    client = gateway.anthropic()
    first_kw = dict(model="claude-sonnet", max_tokens=2048, thinking=THINK, tools=TOOLS,
                    messages=[{"role": "user", "content": "CALL_TOOL weather in Paris"}])
    if stream:
        with client.messages.stream(**first_kw) as s:
            kinds = [e.type for e in s]
            first = s.get_final_message()
        assert "thinking" in kinds and "signature" in kinds  # thinking_delta / signature_delta events
    else:
        first = client.messages.create(**first_kw)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].signature.startswith("sig-mock-")
    assert first.content[1].input == {"city": "Paris"}
    n0 = len(mock.requests())
    # the next turn sends the assistant turn back unchanged (the mock, like Anthropic,
    # rejects a missing or altered signature and a tool_use turn without its thinking)
    second = client.messages.create(
        model="claude-sonnet", max_tokens=2048, thinking=THINK, tools=TOOLS, messages=[
            first_kw["messages"][0],
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id,
                                          "content": "sunny"}]}])
    assert second.content[-1].text == "Echo: CALL_TOOL weather in Paris"
    sent = _sent(mock, n0)[0]["body"]["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": first.content[0].thinking,
                       "signature": first.content[0].signature}


def test_redacted_thinking_and_documents_with_citations_pass_through(gateway, mock):
    pdf = base64.b64encode(b"%PDF-1.4 tiny").decode()
    n0 = len(mock.requests())
    msg = gateway.anthropic().messages.create(model="claude-sonnet", max_tokens=300, messages=[
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
             "title": "report", "citations": {"enabled": True}, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "first question"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "opaque-blob=="},
                                          {"type": "text", "text": "first answer"}]},
        {"role": "user", "content": "summarise the report"}])
    assert msg.content[0].text == "Echo: summarise the report"
    body = _sent(mock, n0)[0]["body"]
    assert body["messages"][0]["content"][0]["source"]["data"] == pdf
    assert body["messages"][0]["content"][0]["citations"] == {"enabled": True}
    assert body["messages"][1]["content"][0] == {"type": "redacted_thinking", "data": "opaque-blob=="}


def test_native_only_content_to_a_translated_model_is_a_clear_400(gateway, mock):
    n0 = len(mock.requests())
    pdf = base64.b64encode(b"%PDF-1.4").decode()
    with pytest.raises(anthropic.BadRequestError) as e:
        gateway.anthropic().messages.create(model="gpt-4o-mini", max_tokens=50, messages=[
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
                {"type": "text", "text": "read it"}]}])
    assert "document" in e.value.body["error"]["message"]
    assert mock.requests()[n0:] == []
    # a plain-text document, thinking and cache_control are translated (or dropped) instead
    msg = gateway.anthropic().messages.create(model="gpt-4o-mini", max_tokens=50, thinking=THINK, messages=[
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}},
            {"type": "text", "text": "read it", "cache_control": {"type": "ephemeral"}}]}])
    assert msg.content[0].text.startswith("Echo:")
    body = mock.requests()[-1]["body"]
    assert "doc text" in json.dumps(body) and "thinking" not in body and "cache_control" not in json.dumps(body)


@pytest.mark.parametrize("stream", [False, True])
def test_redaction_and_restore_in_the_pass_through(gateway, mock, stream):
    email = "sam.smith@example.com"
    n0 = len(mock.requests())
    kw = dict(model="claude-sonnet", max_tokens=200, thinking=THINK,
              messages=[{"role": "user", "content": [{"type": "text", "text": f"write to {email}",
                                                      "cache_control": {"type": "ephemeral"}}]}])
    if stream:
        with gateway.anthropic().messages.stream(**kw) as s:
            deltas = "".join(e.delta.text for e in s if e.type == "content_block_delta"
                             and e.delta.type == "text_delta")
            msg = s.get_final_message()
        assert deltas == f"Echo: write to {email}"
    else:
        msg = gateway.anthropic().messages.create(**kw)
    assert msg.content[-1].text == f"Echo: write to {email}"
    assert msg.content[0].type == "thinking" and msg.content[0].signature.startswith("sig-mock-")
    sent = _sent(mock, n0)[0]
    assert email not in json.dumps(sent["body"]) and "<EMAIL_1>" in json.dumps(sent["body"])
    assert sent["body"]["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}


def test_count_tokens_exact_from_anthropic_and_estimated_otherwise(gateway, mock):
    client = gateway.anthropic()
    n0 = len(mock.requests())
    msgs = [{"role": "user", "content": "count these words please mail x.y@example.com"}]
    got = client.messages.count_tokens(model="claude-sonnet", system="be brief", tools=TOOLS,
                                       messages=msgs, thinking=THINK)
    sent = _sent(mock, n0, "/v1/messages/count_tokens")
    assert len(sent) == 1
    body = sent[0]["body"]
    assert "x.y@example.com" not in json.dumps(body)  # ai-redact applies: the prompt leaves the gateway
    assert body["model"] == "claude-sonnet-4-20250514" and body["tools"] == TOOLS
    assert "max_tokens" not in body and "stream" not in body
    # the mock counts words + 3 per message (system included): exact means its number
    assert got.input_tokens == 6 + 2 + 3 * 2  # 6 words (the email is one placeholder) + "be brief"
    assert _sent(mock, n0) == []  # nothing generated
    raw = client.messages.with_raw_response.count_tokens(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count these words please mail bob"}])
    assert raw.headers["x-ai-token-count"] == "estimated"
    assert raw.parse().input_tokens > 6
    assert mock.requests()[n0 + 1:] == []  # the gateway counted alone


def test_count_tokens_is_not_charged_and_bad_bodies_are_anthropic_400(make_gateway, mock):
    from .conftest import plugin_config

    def edit(doc):
        plugin_config(doc, "ai-tokens")["limits"] = [{"scope": "consumer", "tokens": 30, "window": "minute"}]
    gw = make_gateway(edit)
    for _ in range(5):  # well beyond the 30-token limit if it counted
        assert gw.anthropic().messages.count_tokens(
            model="claude-sonnet", messages=[{"role": "user", "content": "one two three four five"}]).input_tokens
    r = requests.post(gw.url + "/v1/messages/count_tokens", headers=gw.headers(),
                      json={"model": "claude-sonnet", "messages": "nope"})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_x_api_key_and_bearer_both_authenticate(gateway, mock):
    import anthropic as sdk
    by_key = requests.post(gateway.url + "/v1/messages", headers={"x-api-key": DEMO_API_KEY,
                                                                  "anthropic-version": "2023-06-01"},
                           json={"model": "claude-sonnet", "max_tokens": 10,
                                 "messages": [{"role": "user", "content": "hi key"}]})
    assert by_key.status_code == 200 and by_key.json()["content"][0]["text"] == "Echo: hi key"
    assert DEMO_API_KEY not in json.dumps(mock.requests()[-1]["headers"])  # hide_credentials
    from aigw_dev.dev import demo_token
    c = sdk.Anthropic(base_url=gateway.url, auth_token=demo_token(), api_key=None, max_retries=0)
    assert c.messages.create(model="claude-sonnet", max_tokens=10,
                             messages=[{"role": "user", "content": "hi token"}]).content[0].text == "Echo: hi token"
    bad = requests.post(gateway.url + "/v1/messages", headers={"x-api-key": "not-a-key"},
                        json={"model": "claude-sonnet", "max_tokens": 10, "messages": []})
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"


def test_provider_error_in_the_pass_through_keeps_anthropic_format(make_gateway, mock):
    from .conftest import add_model
    gw = make_gateway(lambda d: add_model(d, "claude-broken", [{"provider": "anthropic",
                                                                "model": "claude-fault-400"}]))
    with pytest.raises(anthropic.BadRequestError) as e:
        gw.anthropic().messages.create(model="claude-broken", max_tokens=10,
                                       messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"


def test_pass_through_stream_cut_by_the_provider_ends_with_an_error_event(make_gateway, mock):
    from .conftest import add_model
    gw = make_gateway(lambda d: add_model(d, "claude-cut", [{"provider": "anthropic",
                                                             "model": "claude-fault-cut"}]))
    r = requests.post(gw.url + "/v1/messages", headers=gw.headers(), stream=True, timeout=30,
                      json={"model": "claude-cut", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "a b c d e f g h i j k l m n o p"}]})
    assert r.status_code == 200
    lines = [ln for ln in r.iter_lines() if ln.startswith(b"event: ")]
    assert lines[-1] == b"event: error" and b"event: message_stop" not in lines


def test_count_tokens_provider_failures(make_gateway, mock):
    from .conftest import add_model

    def edit(doc):
        add_model(doc, "claude-count-down", [{"provider": "anthropic", "model": "claude-fault-503"}])
        add_model(doc, "claude-count-bad", [{"provider": "anthropic", "model": "claude-fault-400"}])
    gw = make_gateway(edit)
    msgs = [{"role": "user", "content": "one two three"}]
    # the provider is down: the gateway's own count, flagged estimated
    raw = gw.anthropic().messages.with_raw_response.count_tokens(model="claude-count-down", messages=msgs)
    assert raw.headers["x-ai-token-count"] == "estimated" and raw.parse().input_tokens > 3
    # the provider refuses the request: its 400, in Anthropic's format
    with pytest.raises(anthropic.BadRequestError) as e:
        gw.anthropic().messages.count_tokens(model="claude-count-bad", messages=msgs)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
