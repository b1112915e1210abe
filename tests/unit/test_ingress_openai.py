"""Shape validation of canonical OpenAI requests."""
from __future__ import annotations

import pytest

from aigw.errors import GatewayError
from aigw.ingress.openai import validate_chat, validate_embeddings

SECRET = "my secret prompt text"


def chat(**kw) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": SECRET}], **kw}


@pytest.mark.parametrize("body", [
    chat(),
    chat(stream=True, stream_options={"include_usage": True}, n=2, max_tokens=5,
         max_completion_tokens=5, temperature=0.5, top_p=1, stop=["a"]),
    chat(messages=[{"role": "system", "content": "s"},
                   {"role": "user", "content": [{"type": "text", "text": "t"},
                                                {"type": "image_url", "image_url": {"url": "u"}}]},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "c", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c", "content": "r"}],
         tools=[{"type": "function", "function": {"name": "f"}}],
         tool_choice={"type": "function", "function": {"name": "f"}},
         response_format={"type": "json_object"}),
    {"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}]},
])
def test_valid_chat(body):
    validate_chat(body)


@pytest.mark.parametrize("body, param", [
    ([], "body"),
    ({"model": "m"}, "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages="hello"), "messages"),
    (chat(messages=[{"role": "robot", "content": SECRET}]), "messages[0].role"),
    (chat(messages=[{"content": SECRET}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": 42}]), "messages[0].content"),
    (chat(messages=[{"role": "user"}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "video", "url": SECRET}]}]),
     "messages[0].content[0].type"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": SECRET}]}]),
     "messages[0].content[0].image_url.url"),
    (chat(messages=[{"role": "assistant"}]), "messages[0].content"),
    (chat(messages=[{"role": "tool", "content": SECRET}]), "messages[0].tool_call_id"),
    (chat(messages=[{"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}]),
     "messages[0].tool_calls[0]"),
    (chat(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "messages[0].tool_calls"),
    (chat(stream="true"), "stream"),
    (chat(stream=1), "stream"),
    (chat(stream_options="yes"), "stream_options"),
    (chat(n=0), "n"),
    (chat(n="2"), "n"),
    (chat(n=True), "n"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_completion_tokens="9"), "max_completion_tokens"),
    (chat(temperature="hot"), "temperature"),
    (chat(stop=[1]), "stop"),
    (chat(tools={"f": 1}), "tools"),
    (chat(tools=[{"type": "function"}]), "tools[0].function.name"),
    (chat(tool_choice="sometimes"), "tool_choice"),
    (chat(response_format={"type": "yaml"}), "response_format"),
    (chat(model=5), "model"),
])
def test_invalid_chat(body, param):
    with pytest.raises(GatewayError) as exc:
        validate_chat(body)
    assert exc.value.status == 400
    assert exc.value.param == param
    assert param.split(".")[0].split("[")[0] in exc.value.message
    assert SECRET not in exc.value.message


@pytest.mark.parametrize("body", [
    {"model": "e", "input": "x"},
    {"model": "e", "input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"},
    {"input": [1, 2, 3]},
    {"input": [[1, 2], [3]]},
])
def test_valid_embeddings(body):
    validate_embeddings(body)


@pytest.mark.parametrize("body, param", [
    ("x", "body"),
    ({"model": "e"}, "input"),
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["a", 1]}, "input"),
    ({"input": [[]]}, "input"),
    ({"input": {"text": SECRET}}, "input"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "model": ["e"]}, "model"),
])
def test_invalid_embeddings(body, param):
    with pytest.raises(GatewayError) as exc:
        validate_embeddings(body)
    assert exc.value.status == 400 and exc.value.param == param
    assert SECRET not in exc.value.message
