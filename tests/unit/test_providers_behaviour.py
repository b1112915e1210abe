"""Adapter behaviour not covered by the golden fixtures: errors, URL rules, edge cases."""
from __future__ import annotations

import re

import orjson
import pytest

from aigw.errors import GatewayError
from aigw.providers import (
    ADAPTERS,
    NotSupported,
    ProviderProtocolError,
    UpstreamStreamError,
    get_adapter,
)
from aigw.providers.base import api_root, parse_data_url, scrub
from aigw.providers.mistral import mistral_tool_id
from aigw.types import ProviderConfig

ALL = sorted(ADAPTERS)
MSGS = [{"role": "user", "content": "hi"}]


def cfg(type_: str, base_url: str = "http://upstream.test", **kw) -> ProviderConfig:
    return ProviderConfig(name="p", type=type_, base_url=base_url, api_key="sk-test-secret-123",
                          **kw)


def body_of(req) -> dict:
    return orjson.loads(req.body)


def test_registry_and_unknown_type():
    assert set(ALL) == {"openai", "azure", "anthropic", "gemini", "mistral", "openai_compatible",
                        "bedrock", "vertex"}
    for name in ALL:
        assert get_adapter(name).type == name
    with pytest.raises(KeyError, match="sagemaker"):
        get_adapter("sagemaker")


@pytest.mark.parametrize("base_url, expected", [
    ("http://vllm:8000/v1", "http://vllm:8000/v1/chat/completions"),
    ("http://vllm:8000/v1/", "http://vllm:8000/v1/chat/completions"),
    ("http://ollama:11434", "http://ollama:11434/v1/chat/completions"),
    ("http://ollama:11434/", "http://ollama:11434/v1/chat/completions"),
    ("https://api.groq.com/openai/v1", "https://api.groq.com/openai/v1/chat/completions"),
    ("http://llama:8080/custom", "http://llama:8080/custom/chat/completions"),
])
def test_openai_compatible_base_url_rule(base_url, expected):
    req = get_adapter("openai_compatible").chat_request({"messages": MSGS}, "m",
                                                        cfg("openai_compatible", base_url),
                                                        stream=False)
    assert req.url == expected
    assert api_root(base_url) + "/chat/completions" == expected


@pytest.mark.parametrize("base_url", ["https://api.anthropic.com", "https://api.anthropic.com/",
                                      "https://api.anthropic.com/v1"])
def test_anthropic_base_url_with_or_without_v1(base_url):
    req = get_adapter("anthropic").chat_request({"messages": MSGS}, "c", cfg("anthropic", base_url),
                                                stream=False)
    assert req.url == "https://api.anthropic.com/v1/messages"


@pytest.mark.parametrize("base_url, expected", [
    ("https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com/v1beta"),
    ("https://generativelanguage.googleapis.com/v1", "https://generativelanguage.googleapis.com/v1"),
    ("http://gw.local/google/v1beta/", "http://gw.local/google/v1beta"),
])
def test_gemini_url(base_url, expected):
    req = get_adapter("gemini").chat_request({"messages": MSGS}, "models/gemini-2.0-flash",
                                             cfg("gemini", base_url), stream=True)
    assert req.url == expected + "/models/gemini-2.0-flash:streamGenerateContent?alt=sse"


def test_azure_default_api_version_and_embeddings_url():
    req = get_adapter("azure").embeddings_request({"input": "x"}, "emb deploy",
                                                  cfg("azure", "https://r.openai.azure.com"))
    assert req.url == ("https://r.openai.azure.com/openai/deployments/emb%20deploy/embeddings"
                       "?api-version=2024-10-21")
    assert req.headers["api-key"] == "sk-test-secret-123"
    assert "authorization" not in req.headers


AUTH = {"openai": ("authorization", "Bearer sk-test-secret-123"),
        "mistral": ("authorization", "Bearer sk-test-secret-123"),
        "openai_compatible": ("authorization", "Bearer sk-test-secret-123"),
        "azure": ("api-key", "sk-test-secret-123"),
        "anthropic": ("x-api-key", "sk-test-secret-123"),
        "gemini": ("x-goog-api-key", "sk-test-secret-123")}


@pytest.mark.parametrize("type_", sorted(AUTH))  # bedrock/vertex: tests/unit/test_providers_cloud.py
def test_auth_header_wins_over_static_headers(type_):
    provider = cfg(type_, headers={"Authorization": "Bearer other", "x-api-key": "other",
                                   "api-key": "other", "x-goog-api-key": "other",
                                   "X-Extra": "1", "Content-Type": "text/plain"})
    req = get_adapter(type_).chat_request({"messages": MSGS}, "m", provider, stream=False)
    name, value = AUTH[type_]
    assert req.headers[name] == value
    assert req.headers["x-extra"] == "1"
    assert req.headers["content-type"] == "application/json"
    assert all(k == k.lower() for k in req.headers)


@pytest.mark.parametrize("type_", ["openai", "azure", "mistral", "openai_compatible", "gemini"])
def test_no_api_key_no_auth_header(type_):
    provider = ProviderConfig(name="p", type=type_, base_url="http://local")
    req = get_adapter(type_).chat_request({"messages": MSGS}, "m", provider, stream=False)
    assert AUTH[type_][0] not in req.headers


@pytest.mark.parametrize("type_", ["openai", "azure", "mistral", "openai_compatible"])
def test_openai_family_non_stream_strips_stream_fields(type_):
    body = {"messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}
    out = body_of(get_adapter(type_).chat_request(body, "m", cfg(type_), stream=False))
    assert "stream" not in out and "stream_options" not in out
    assert body["stream"] is True  # caller's dict untouched


@pytest.mark.parametrize("type_", ["openai", "azure", "openai_compatible"])
def test_openai_family_stream_always_requests_usage(type_):
    out = body_of(get_adapter(type_).chat_request(
        {"messages": MSGS, "stream_options": {"include_usage": False, "x": 1}}, "m", cfg(type_),
        stream=True))
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True, "x": 1}


def test_mistral_tool_ids_are_stable_and_valid():
    for raw in ["call_abc", "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "x", "call_0001"]:
        out = mistral_tool_id(raw)
        assert re.fullmatch(r"[A-Za-z0-9]{9}", out)
        assert mistral_tool_id(raw) == out
    assert mistral_tool_id("call_a") != mistral_tool_id("call_b")
    assert mistral_tool_id("Abc123xyz") == "Abc123xyz"


def test_anthropic_defaults_and_unsupported():
    adapter = get_adapter("anthropic")
    out = body_of(adapter.chat_request({"messages": MSGS}, "c", cfg("anthropic"), stream=False))
    assert out["max_tokens"] == 4096
    assert "stream" not in out and "system" not in out
    with pytest.raises(NotSupported) as exc:
        adapter.chat_request({"messages": MSGS, "n": 2}, "c", cfg("anthropic"), stream=False)
    assert exc.value.status == 400 and exc.value.param == "n"
    with pytest.raises(NotSupported):
        adapter.embeddings_request({"input": "x"}, "c", cfg("anthropic"))


def test_anthropic_response_format_becomes_system_instruction():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = body_of(get_adapter("anthropic").chat_request(
        {"messages": [{"role": "system", "content": "S"}] + MSGS,
         "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
        "c", cfg("anthropic"), stream=False))
    assert out["system"].startswith("S\n\n")
    assert orjson.dumps(schema).decode() in out["system"]


@pytest.mark.parametrize("messages", [
    [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
    [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
    [{"role": "wizard", "content": "x"}],
])
def test_anthropic_request_errors_are_400(messages):
    with pytest.raises(GatewayError) as exc:
        get_adapter("anthropic").chat_request({"messages": messages}, "c", cfg("anthropic"),
                                              stream=False)
    assert exc.value.status == 400


def test_gemini_tool_message_without_matching_call_is_400():
    msgs = [{"role": "tool", "tool_call_id": "nope", "content": "x"}]
    with pytest.raises(GatewayError) as exc:
        get_adapter("gemini").chat_request({"messages": msgs}, "g", cfg("gemini"), stream=False)
    assert exc.value.status == 400


def test_gemini_tool_choice_modes():
    tools = [{"type": "function", "function": {"name": "f"}}]
    for choice, mode in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")]:
        out = body_of(get_adapter("gemini").chat_request(
            {"messages": MSGS, "tools": tools, "tool_choice": choice}, "g", cfg("gemini"),
            stream=False))
        assert out["toolConfig"] == {"functionCallingConfig": {"mode": mode}}
        assert out["tools"] == [{"functionDeclarations": [{"name": "f"}]}]


def test_gemini_blocked_prompt():
    data = orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"},
                         "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}})
    resp = get_adapter("gemini").chat_response(data, "g")
    assert resp["choices"][0]["finish_reason"] == "content_filter"
    assert resp["usage"]["prompt_tokens"] == 4
    dec = get_adapter("gemini").chat_stream("g")
    chunks = dec.feed(b"data: " + data + b"\r\n\r\n") + dec.close()
    assert chunks[0]["choices"][0]["finish_reason"] == "content_filter"
    assert dec.done and chunks[-1]["usage"]["prompt_tokens"] == 4


def test_gemini_stream_two_candidates_done_only_when_both_finish():
    dec = get_adapter("gemini").chat_stream("g")
    ev = {"candidates": [{"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
                         {"index": 1, "content": {"parts": [{"text": "b"}]}}]}
    out = dec.feed(b"data: " + orjson.dumps(ev) + b"\n\n")
    assert [c["choices"][0]["index"] for c in out] == [0, 1]
    assert not dec.done
    ev = {"candidates": [{"index": 1, "content": {"parts": [{"text": "c"}]},
                          "finishReason": "MAX_TOKENS"}]}
    out = dec.feed(b"data: " + orjson.dumps(ev) + b"\n\n")
    assert out[0]["choices"][0]["delta"] == {"content": "c"}
    assert dec.done and dec.finish_reason == "length"
    assert dec.close() == []  # no usage reported, no usage chunk
    assert dec.usage is None


@pytest.mark.parametrize("type_, raw", [
    ("openai", b"data: {\"error\": {\"message\": \"server overloaded\", \"type\": \"x\"}}\n\n"),
    ("anthropic", (b"event: error\ndata: {\"type\": \"error\", \"error\": "
                   b"{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n")),
    ("gemini", b"data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\"}}\n\n"),
])
def test_stream_error_events_raise(type_, raw):
    dec = get_adapter(type_).chat_stream("m")
    with pytest.raises(UpstreamStreamError) as exc:
        dec.feed(raw)
    assert exc.value.status == 502
    assert "verload" in exc.value.message


def test_stream_error_keeps_chunks_decoded_before_it():
    raw = (b'data: {"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":'
           b'{"content":"x"},"finish_reason":null}]}\n\n'
           b'data: {"error":{"message":"boom"}}\n\n')
    with pytest.raises(UpstreamStreamError) as exc:
        get_adapter("openai").chat_stream("m").feed(raw)
    assert exc.value.chunks[0]["choices"][0]["delta"] == {"content": "x"}


@pytest.mark.parametrize("type_", ALL)
@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b"{}", b""])
def test_unparseable_responses_raise_protocol_error(type_, data):
    with pytest.raises(ProviderProtocolError) as exc:
        get_adapter(type_).chat_response(data, "m")
    assert exc.value.status == 502


@pytest.mark.parametrize("type_", ["openai", "anthropic", "gemini"])
def test_unparseable_stream_event_raises_protocol_error(type_):
    with pytest.raises(ProviderProtocolError):
        get_adapter(type_).chat_stream("m").feed(b"data: {not json\n\n")


def test_truncated_stream_is_not_done():
    dec = get_adapter("anthropic").chat_stream("m")
    dec.feed(b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
             b'"model":"c","usage":{"input_tokens":5,"output_tokens":1}}}\n\n')
    out = dec.close()
    assert not dec.done
    assert dec.usage.input_tokens == 5
    assert out[-1]["usage"]["prompt_tokens"] == 5  # partial usage still reported


def test_openai_events_after_done_are_ignored():
    dec = get_adapter("openai").chat_stream("m")
    assert dec.feed(b"data: [DONE]\n\ndata: {\"choices\": []}\n\n") == []
    assert dec.done and dec.usage is None


@pytest.mark.parametrize("type_, body, expected", [
    ("openai", {"error": {"message": "Incorrect API key provided: sk-proj-abcdef1234567890. "
                                     "You can find your API key at https://platform.openai.com/account/api-keys.",
                          "type": "invalid_request_error", "code": "invalid_api_key"}},
     "Incorrect API key provided: <redacted>. You can find your API key at <url>"),
    ("anthropic", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     "Overloaded"),
    ("gemini", [{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                           "status": "INVALID_ARGUMENT"}}],
     "API key not valid. Please pass a valid API key."),
    ("mistral", {"object": "error", "message": "Unauthorized", "type": "invalid_request_error"},
     "Unauthorized"),
    ("mistral", {"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options"],
                             "msg": "Extra inputs are not permitted", "input": "PROMPT TEXT"}]},
     "stream_options: Extra inputs are not permitted"),
    ("bedrock", {"message": "The security token included in the request is invalid. "
                            "Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/bedrock"},
     "The security token included in the request is invalid. Credential=<redacted>/20250101/"),
    ("vertex", {"error": {"code": 429, "message": "Quota exceeded for aiplatform.googleapis.com/"
                                                   "generate_content_requests_per_minute",
                          "status": "RESOURCE_EXHAUSTED"}},
     "Quota exceeded for aiplatform.googleapis.com/<redacted>"),
])
def test_error_summary(type_, body, expected):
    out = get_adapter(type_).error_summary(400, orjson.dumps(body))
    assert out.startswith(expected)
    assert "PROMPT TEXT" not in out and "sk-proj" not in out and "https://" not in out


def test_error_summary_fallbacks_and_truncation():
    adapter = get_adapter("openai")
    assert adapter.error_summary(502, b"<html>Bad gateway</html>") == "provider returned HTTP 502"
    assert adapter.error_summary(500, b"") == "provider returned HTTP 500"
    long = adapter.error_summary(400, orjson.dumps({"error": {"message": "word " * 200}}))
    assert len(long) <= 200


def test_scrub_removes_key_shapes():
    text = ("key=abc123 AIzaSyA-very-secret-google-key bearer eyJhbGciOi.payload "
            "x-api-key: sk-ant-api03-secret and wss://host/path?token=1 "
            "AKIAIOSFODNN7EXAMPLE ASIAXYZXYZXYZXYZXYZ1 ya29.a0AfH6SMBx-token")
    out = scrub(text)
    for secret in ("abc123", "AIzaSy", "eyJhbG", "sk-ant", "wss://", "AKIAIOSF", "ASIAXYZ",
                   "ya29.a0"):
        assert secret not in out


def test_parse_data_url():
    assert parse_data_url("data:image/png;base64,AAAA") == ("image/png", "AAAA")
    assert parse_data_url("data:image/webp;name=a.webp;base64,QQ==") == ("image/webp", "QQ==")
    assert parse_data_url("data:text/plain,hello") is None
    assert parse_data_url("https://x/y.png") is None


def test_gemini_embeddings_reject_token_arrays():
    with pytest.raises(NotSupported):
        get_adapter("gemini").embeddings_request({"input": [[1, 2, 3]]}, "e", cfg("gemini"))


def test_mistral_embeddings_dimensions():
    out = body_of(get_adapter("mistral").embeddings_request(
        {"input": ["a"], "dimensions": 256, "user": "u"}, "codestral-embed", cfg("mistral")))
    assert out == {"input": ["a"], "output_dimension": 256, "model": "codestral-embed"}


def test_openai_stream_tolerates_bare_usage_event_and_rejects_bad_choices():
    dec = get_adapter("openai_compatible").chat_stream("m")
    assert dec.feed(b'data: {"usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n') == []
    out = dec.close()
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 5
    assert dec.usage.input_tokens == 3 and not dec.done
    with pytest.raises(ProviderProtocolError):
        get_adapter("openai").chat_stream("m").feed(b'data: {"choices": {"0": 1}}\n\n')
