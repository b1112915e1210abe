"""The mock provider server, driven by the official SDKs and raw HTTP."""
from __future__ import annotations

import base64
import http.client
import select
import socket
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest
import requests

from aigw.sse import SSEDecoder
from aigw_dev.mock.behaviour import parse_faults
from aigw_dev.mock.testing import MockProvider

KEY = "mock-key"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
A_TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
G_TOOLS = [{"functionDeclarations": [{"name": "get_weather"}]}]


@pytest.fixture(scope="module")
def server() -> Iterator[MockProvider]:
    with MockProvider() as mock:
        yield mock


@pytest.fixture()
def mock(server: MockProvider) -> MockProvider:
    server.clear()
    return server


def oai(mock: MockProvider, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.url + "/v1", api_key=key, max_retries=0)


def claude(mock: MockProvider, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.url, api_key=key, max_retries=0)


def sse_events(resp: requests.Response) -> list[Any]:
    dec = SSEDecoder()
    events = []
    for chunk in resp.iter_content(chunk_size=None):
        events += dec.feed(chunk)
    return events + dec.close()


def chat(mock: MockProvider, body: dict[str, Any], **kw: Any) -> requests.Response:
    return requests.post(mock.url + "/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {KEY}"}, **kw)


def messages(mock: MockProvider, body: dict[str, Any], **kw: Any) -> requests.Response:
    return requests.post(mock.url + "/v1/messages", json={"max_tokens": 50, **body},
                         headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}, **kw)


def gemini(mock: MockProvider, model: str, body: dict[str, Any], streaming: bool = False,
           sse: bool = True, key: str | None = KEY, **kw: Any) -> requests.Response:
    method = "streamGenerateContent" if streaming else "generateContent"
    url = f"{mock.url}/v1beta/models/{model}:{method}" + ("?alt=sse" if streaming and sse else "")
    headers = {"x-goog-api-key": key} if key else {}
    return requests.post(url, json=body, headers=headers, **kw)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- pure rules -------------------------------------------------------------

def test_parse_faults_reads_every_switch() -> None:
    f = parse_faults("gpt-slow-250-stream-delay-40-fault-cut-no-usage-cached-thinking")
    assert (f.slow_ms, f.stream_delay_ms, f.cut, f.no_usage, f.cached, f.thinking) == (
        250, 40, True, True, True, True)
    assert f.status is None
    assert parse_faults("x-fault-429").status == 429
    assert parse_faults("stream-delay-30").slow_ms == 0  # "delay" is not "slow"
    assert parse_faults("gpt-4o") == parse_faults("claude-3")


# --- OpenAI -----------------------------------------------------------------

def test_openai_echo_and_usage_formula(mock: MockProvider) -> None:
    r = oai(mock).chat.completions.create(model="gpt-4o", messages=[
        {"role": "system", "content": "be brief please"},
        {"role": "user", "content": [{"type": "text", "text": "hello there world"}]}])
    assert r.choices[0].message.content == "Echo: hello there world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == 3 + 3 + 2 * 3
    assert r.usage.completion_tokens == 4
    assert r.usage.total_tokens == 16
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.model == "gpt-4o"


def test_openai_reply_directive_and_tool_result_words(mock: MockProvider) -> None:
    r = oai(mock).chat.completions.create(model="m", messages=[
        {"role": "user", "content": "say REPLY:Hi <EMAIL_1> there"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny and warm"}])
    assert r.choices[0].message.content == "Hi <EMAIL_1> there"
    assert r.usage.prompt_tokens == 4 + 0 + 3 + 3 * 3
    assert r.usage.completion_tokens == 3


def test_openai_stream_chunks_and_usage_only_when_asked(mock: MockProvider) -> None:
    msgs = user("mail REPLY:write to <EMAIL_1> now")
    plain = list(oai(mock).chat.completions.create(model="m", messages=msgs, stream=True))
    pieces = [c.choices[0].delta.content for c in plain if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "write to <EMAIL_1> now"
    assert all(len(p) <= 4 for p in pieces)
    assert not any("<EMAIL_1>" in p for p in pieces)
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"

    asked = list(oai(mock).chat.completions.create(
        model="m", messages=msgs, stream=True, stream_options={"include_usage": True}))
    usage_chunks = [c for c in asked if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is asked[-1]
    assert asked[-1].choices == []
    assert asked[-1].usage.prompt_tokens == 5 + 3
    assert asked[-1].usage.completion_tokens == 4


def test_openai_stream_ends_with_done(mock: MockProvider) -> None:
    with chat(mock, {"model": "m", "messages": user("hi"), "stream": True}, stream=True) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1].data == "[DONE]"
    assert events[0].json()["choices"][0]["delta"]["role"] == "assistant"


def test_openai_n_choices(mock: MockProvider) -> None:
    r = oai(mock).chat.completions.create(model="m", messages=user("a b"), n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert {c.message.content for c in r.choices} == {"Echo: a b"}
    assert r.usage.completion_tokens == 3 * 3
    chunks = list(oai(mock).chat.completions.create(model="m", messages=user("a b"), n=2,
                                                    stream=True))
    texts = {0: "", 1: ""}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts == {0: "Echo: a b", 1: "Echo: a b"}


def test_openai_tool_call(mock: MockProvider) -> None:
    r = oai(mock).chat.completions.create(model="m", messages=user("weather? CALL_TOOL"),
                                          tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'
    assert r.usage.completion_tokens == 2
    # without tools the directive is just text
    plain = oai(mock).chat.completions.create(model="m", messages=user("CALL_TOOL"))
    assert plain.choices[0].message.content == "Echo: CALL_TOOL"


def test_openai_tool_call_stream_and_no_call_after_result(mock: MockProvider) -> None:
    chunks = list(oai(mock).chat.completions.create(
        model="m", messages=user("CALL_TOOL"), tools=TOOLS, stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather" and calls[0].id
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"city": "Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    after = oai(mock).chat.completions.create(model="m", tools=TOOLS, messages=[
        *user("CALL_TOOL"),
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function", "function": {"name": "get_weather",
                                                         "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"}])
    assert after.choices[0].finish_reason == "stop"
    assert after.choices[0].message.content == "Echo: CALL_TOOL"


def test_openai_cached_and_thinking_models(mock: MockProvider) -> None:
    r = oai(mock).chat.completions.create(model="gpt-cached-thinking",
                                          messages=user("one two three four five"))
    assert r.usage.prompt_tokens == 8
    assert r.usage.prompt_tokens_details.cached_tokens == 4
    assert r.usage.completion_tokens_details.reasoning_tokens == 10
    assert r.usage.completion_tokens == 6 + 10


def test_embeddings(mock: MockProvider) -> None:
    client = oai(mock)
    one = client.embeddings.create(model="text-embedding-3-small", input="hello world",
                                   encoding_format="float")
    many = client.embeddings.create(model="e", input=["hello world", "other text here"],
                                    encoding_format="float")
    assert len(one.data[0].embedding) == 8
    assert one.data[0].embedding == many.data[0].embedding
    assert many.data[0].embedding != many.data[1].embedding
    assert abs(sum(v * v for v in many.data[1].embedding) - 1.0) < 1e-3
    assert many.usage.prompt_tokens == 5 and many.usage.total_tokens == 5
    raw = requests.post(mock.url + "/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "e", "input": "hello world",
                              "encoding_format": "base64"}).json()
    decoded = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert [round(v, 4) for v in decoded] == [round(v, 4) for v in one.data[0].embedding]


def test_models_and_auth(mock: MockProvider) -> None:
    ids = [m.id for m in oai(mock).models.list()]
    assert "gpt-4o" in ids
    with pytest.raises(openai.AuthenticationError) as err:
        oai(mock, key="wrong-secret").chat.completions.create(model="m", messages=user("x"))
    assert err.value.status_code == 401
    assert err.value.body["code"] == "invalid_api_key"
    assert "wrong-secret" not in err.value.response.text
    missing = requests.post(mock.url + "/v1/chat/completions",
                            json={"model": "m", "messages": user("x")})
    assert missing.status_code == 401 and "error" in missing.json()


def test_openai_bad_requests(mock: MockProvider) -> None:
    r = chat(mock, {"model": "m"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = requests.post(mock.url + "/v1/chat/completions", data=b"not json",
                      headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400
    assert requests.get(mock.url + "/v2/nothing").status_code == 404


# --- Azure ------------------------------------------------------------------

def test_azure_chat_and_embeddings(mock: MockProvider) -> None:
    az = openai.AzureOpenAI(azure_endpoint=mock.url, api_key=KEY, api_version="2024-10-21",
                            max_retries=0)
    r = az.chat.completions.create(model="my-deploy", messages=user("hi azure"))
    assert r.choices[0].message.content == "Echo: hi azure"
    assert r.model == "my-deploy"
    e = az.embeddings.create(model="emb-deploy", input="x", encoding_format="float")
    assert len(e.data[0].embedding) == 8
    rec = mock.requests()
    assert rec[0]["path"] == "/openai/deployments/my-deploy/chat/completions"
    assert rec[0]["query"]["api-version"] == "2024-10-21"
    assert rec[0]["headers"]["api-key"] == KEY
    stream = az.chat.completions.create(model="d", messages=user("s t"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: s t"


def test_azure_requires_version_and_key_and_faults_by_deployment(mock: MockProvider) -> None:
    url = mock.url + "/openai/deployments/{}/chat/completions"
    body = {"messages": user("x")}
    no_version = requests.post(url.format("d"), json=body, headers={"api-key": KEY})
    assert no_version.status_code == 400
    bad_key = requests.post(url.format("d") + "?api-version=1", json=body,
                            headers={"api-key": "nope"})
    assert bad_key.status_code == 401
    fault = requests.post(url.format("dep-fault-500") + "?api-version=1",
                          json={**body, "model": "gpt-4o"}, headers={"api-key": KEY})
    assert fault.status_code == 500 and fault.json()["error"]["type"] == "server_error"


# --- Anthropic --------------------------------------------------------------

def test_anthropic_message_and_usage(mock: MockProvider) -> None:
    msg = claude(mock).messages.create(
        model="claude-x", max_tokens=50, system="you are terse",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi there"}]}])
    assert msg.content[0].text == "Echo: hi there"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 3 + 2 + 2 * 3
    assert msg.usage.output_tokens == 3
    assert msg.usage.cache_read_input_tokens == 0
    assert msg.usage.cache_creation_input_tokens == 0


def test_anthropic_cached_usage(mock: MockProvider) -> None:
    body = messages(mock, {"model": "claude-cached", "messages": user("a b c d e f g")}).json()
    prompt = 7 + 3
    assert body["usage"] == {"input_tokens": prompt - prompt // 2,
                             "cache_read_input_tokens": prompt // 2,
                             "cache_creation_input_tokens": 10, "output_tokens": 8}


def test_anthropic_stream_event_sequence(mock: MockProvider) -> None:
    with messages(mock, {"model": "c", "stream": True,
                         "messages": user("REPLY:Dear <PERSON_1>, thanks")}, stream=True) as r:
        events = sse_events(r)
    names = [e.event for e in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert all(e.json()["type"] == e.event for e in events)
    deltas = [e.json()["delta"]["text"] for e in events if e.event == "content_block_delta"]
    assert "".join(deltas) == "Dear <PERSON_1>, thanks"
    assert not any("<PERSON_1>" in d for d in deltas)
    start = events[0].json()["message"]["usage"]
    assert start["input_tokens"] == 3 + 3
    end = events[-2].json()
    assert end["delta"]["stop_reason"] == "end_turn"
    assert end["usage"]["output_tokens"] == 3


def test_anthropic_stream_with_sdk_and_tool_use(mock: MockProvider) -> None:
    with claude(mock).messages.stream(model="c", max_tokens=20,
                                      messages=user("one two")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Echo: one two"
    assert final.usage.output_tokens == 3
    with claude(mock).messages.stream(model="c", max_tokens=20, tools=A_TOOLS,
                                      messages=user("CALL_TOOL now")) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].name == "get_weather"
    assert final.content[0].input == {"city": "Paris"}


def test_anthropic_tool_result_ends_the_loop(mock: MockProvider) -> None:
    msg = claude(mock).messages.create(model="c", max_tokens=20, tools=A_TOOLS, messages=[
        *user("CALL_TOOL please"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
                                           "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "cloudy skies"}]}])
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].text == "Echo: CALL_TOOL please"
    assert msg.usage.input_tokens == 2 + 0 + 2 + 3 * 3


def test_anthropic_auth_and_version(mock: MockProvider) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        claude(mock, key="bad").messages.create(model="c", max_tokens=5, messages=user("x"))
    r = requests.post(mock.url + "/v1/messages", headers={"x-api-key": KEY},
                      json={"model": "c", "max_tokens": 5, "messages": user("x")})
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = messages(mock, {"model": "c", "max_tokens": 5})
    assert r.status_code == 400


# --- Gemini -----------------------------------------------------------------

def test_gemini_generate_and_usage(mock: MockProvider) -> None:
    body = {"systemInstruction": {"parts": [{"text": "be kind"}]},
            "contents": [{"role": "user", "parts": [{"text": "hello gemini"}]}]}
    out = gemini(mock, "gemini-2.5-flash", body).json()
    cand = out["candidates"][0]
    assert cand["content"]["parts"][0]["text"] == "Echo: hello gemini"
    assert cand["finishReason"] == "STOP"
    assert out["usageMetadata"] == {"promptTokenCount": 2 + 2 + 2 * 3,
                                    "candidatesTokenCount": 3, "totalTokenCount": 13}
    rich = gemini(mock, "gemini-thinking-cached", body).json()["usageMetadata"]
    assert rich["thoughtsTokenCount"] == 10
    assert rich["cachedContentTokenCount"] == 5
    assert rich["totalTokenCount"] == 10 + 3 + 10


def test_gemini_stream_sse_and_array(mock: MockProvider) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "REPLY:abcdefghij"}]}]}
    with gemini(mock, "g", body, streaming=True, stream=True) as r:
        events = [e.json() for e in sse_events(r)]
    texts = [e["candidates"][0]["content"]["parts"][0]["text"] for e in events]
    assert texts == ["abcd", "efgh", "ij"]
    assert "finishReason" not in events[0]["candidates"][0]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 1
    array = gemini(mock, "g", body, streaming=True, sse=False).json()
    for e in array + events:
        del e["responseId"]  # counter-derived, differs per request
    assert array == events


def test_gemini_function_call_and_auth(mock: MockProvider) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "CALL_TOOL"}]}], "tools": G_TOOLS}
    part = gemini(mock, "g", body).json()["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    assert gemini(mock, "g", body, key=None).status_code == 403
    bad = gemini(mock, "g", body, key="wrong")
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    via_query = requests.post(f"{mock.url}/v1beta/models/g:generateContent?key={KEY}", json=body)
    assert via_query.status_code == 200


# --- faults -----------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_status_faults_in_each_provider_shape(mock: MockProvider, status: int) -> None:
    model = f"m-fault-{status}"
    o = chat(mock, {"model": model, "messages": user("x")})
    assert o.status_code == status and "message" in o.json()["error"]
    a = messages(mock, {"model": model, "messages": user("x")})
    assert a.status_code == status and a.json()["type"] == "error"
    g = gemini(mock, model, {"contents": [{"parts": [{"text": "x"}]}]})
    assert g.status_code == status and g.json()["error"]["code"] == status
    for r in (o, a, g):
        assert (r.headers.get("retry-after") == "1") == (status == 429)


def test_status_fault_through_sdk(mock: MockProvider) -> None:
    with pytest.raises(openai.RateLimitError):
        oai(mock).chat.completions.create(model="gpt-fault-429", messages=user("x"))
    with pytest.raises(anthropic.InternalServerError):
        claude(mock).messages.create(model="c-fault-500", max_tokens=5, messages=user("x"))


def _raw_socket(mock: MockProvider, path: str, body: bytes, headers: str) -> socket.socket:
    u = urlsplit(mock.url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def _readable(sock: socket.socket, wait: float) -> bool:
    return bool(select.select([sock], [], [], wait)[0])


def test_slow_first_byte(mock: MockProvider) -> None:
    body = b'{"model": "gpt-slow-1000", "messages": [{"role": "user", "content": "x"}]}'
    sock = _raw_socket(mock, "/v1/chat/completions", body, f"Authorization: Bearer {KEY}\r\n")
    try:
        assert not _readable(sock, 0.3)  # nothing, not even headers, yet
        assert _readable(sock, 10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


def test_stream_delay_sends_first_chunk_before_the_rest(mock: MockProvider) -> None:
    body = (b'{"model": "m-stream-delay-1500", "stream": true,'
            b' "messages": [{"role": "user", "content": "x"}]}')
    sock = _raw_socket(mock, "/v1/chat/completions", body, f"Authorization: Bearer {KEY}\r\n")
    try:
        first = b""
        while b"chat.completion.chunk" not in first:
            assert _readable(sock, 10)
            first += sock.recv(65536)
        assert b"[DONE]" not in first
        assert not _readable(sock, 0.3)  # the next chunk is still being delayed
    finally:
        sock.close()


def test_fault_cut_drops_the_stream(mock: MockProvider) -> None:
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError), \
            chat(mock, {"model": "m-fault-cut", "stream": True,
                        "messages": user("a long enough message to cut")}, stream=True) as r:
        for chunk in r.iter_content(chunk_size=None):
            got += chunk
    assert b"Echo" in got
    assert b"[DONE]" not in got and b'"finish_reason":"stop"' not in got
    anth = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError), \
            messages(mock, {"model": "c-fault-cut", "stream": True,
                            "messages": user("words to cut here")}, stream=True) as r:
        for chunk in r.iter_content(chunk_size=None):
            anth += chunk
    assert b"content_block_delta" in anth and b"message_stop" not in anth
    # the server still answers afterwards
    assert chat(mock, {"model": "m", "messages": user("x")}).status_code == 200


def test_no_usage_streams(mock: MockProvider) -> None:
    chunks = list(oai(mock).chat.completions.create(
        model="vllm-no-usage", messages=user("x y"), stream=True,
        stream_options={"include_usage": True}))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: x y"
    with messages(mock, {"model": "c-no-usage", "stream": True, "messages": user("x")},
                  stream=True) as r:
        assert all("usage" not in e.json() and "usage" not in e.json().get("message", {})
                   for e in sse_events(r))
    with gemini(mock, "g-no-usage", {"contents": [{"parts": [{"text": "x"}]}]},
                streaming=True, stream=True) as r:
        assert all("usageMetadata" not in e.json() for e in sse_events(r))


# --- recording, control routes, connections ---------------------------------

def test_recording_and_control_routes(mock: MockProvider) -> None:
    requests.post(mock.url + "/v1/chat/completions?trace=1", json={"model": "m",
                  "messages": user("x")}, headers={"Authorization": f"Bearer {KEY}",
                                                   "X-Custom-Header": "v"})
    requests.post(mock.url + "/v1/messages", data=b"plain text", headers={"x-api-key": KEY})
    rec = mock.requests()
    assert [r["path"] for r in rec] == ["/v1/chat/completions", "/v1/messages"]
    first = rec[0]
    assert first["method"] == "POST" and first["query"] == {"trace": "1"}
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    assert first["headers"]["x-custom-header"] == "v"
    assert all(k == k.lower() for k in first["headers"])
    assert first["body"]["messages"][0]["content"] == "x"
    assert isinstance(first["time"], float)
    assert rec[1]["body"] == "plain text"
    over_http = requests.get(mock.url + "/_mock/requests").json()
    assert over_http == rec  # control routes are not recorded themselves
    assert requests.get(mock.url + "/_mock/health").status_code == 200
    assert requests.delete(mock.url + "/_mock/requests").status_code == 200
    assert mock.requests() == []


def test_ids_come_from_a_counter(mock: MockProvider) -> None:
    ids = {oai(mock).chat.completions.create(model="m", messages=user("x")).id
           for _ in range(3)}
    assert len(ids) == 3


def test_keep_alive_serves_several_requests_on_one_connection(mock: MockProvider) -> None:
    u = urlsplit(mock.url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    try:
        for stream in (True, False, True):
            conn.request("POST", "/v1/chat/completions", headers=headers,
                         body=b'{"model":"m","stream":%s,"messages":[{"role":"user",'
                              b'"content":"x"}]}' % (b"true" if stream else b"false"))
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200 and b"Echo" in data
            assert resp.getheader("transfer-encoding") == ("chunked" if stream else None)
            assert resp.getheader("connection") != "close"
        sock_before = conn.sock
        conn.request("GET", "/_mock/health")
        conn.getresponse().read()
        assert conn.sock is sock_before
    finally:
        conn.close()


def test_subprocess_mode() -> None:
    with MockProvider(process=True) as mock:
        r = oai(mock).chat.completions.create(model="m", messages=user("from a child"))
        assert r.choices[0].message.content == "Echo: from a child"
        assert mock.requests()[0]["body"]["model"] == "m"
        mock.clear()
        assert mock.requests() == []


def test_mock_honours_max_tokens_and_overproduce_ignores_it():
    from aigw_dev.mock.behaviour import OVERPRODUCE_WORDS, Faults, Reply, limit_reply, parse_faults
    r = Reply("one  two three\nfour")
    assert limit_reply(r, 2, Faults()) == (Reply("one  two"), True)
    assert limit_reply(r, 4, Faults()) == (r, False)
    assert limit_reply(r, None, Faults()) == (r, False)
    assert limit_reply(Reply("", "get_weather"), 1, Faults()) == (Reply("", "get_weather"), False)
    over, cut = limit_reply(r, 2, parse_faults("gpt-4o-overproduce"))
    assert not cut and len(over.text.split()) == OVERPRODUCE_WORDS
