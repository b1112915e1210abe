"""ai-redact over the request shapes that arrived with issue 16: the Anthropic pass-through
(the client's own body goes to Anthropic) and the Responses API (rebuilt by ai-router).

Every model-readable field holds its own seeded address; none may reach the provider, in any
field the pass-through or the translation forwards, and the answer still succeeds."""
from __future__ import annotations

import orjson
import pytest
import requests


def _seed(i: int) -> str:
    return f"seed.user{i:02d}@example.com"


def _leaked(mock, n0: int, count: int) -> list[str]:
    sent = orjson.dumps([r["body"] for r in mock.requests()[n0:]]).decode()
    assert sent != "[]", "nothing reached the provider"
    return [_seed(i) for i in range(count) if _seed(i) in sent]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_pass_through_sends_no_seeded_value(gateway, mock, stream):
    s = [_seed(i) for i in range(12)]
    body = {
        "model": "claude-sonnet", "max_tokens": 64, "stream": stream,
        "system": [{"type": "text", "text": f"mail {s[0]}", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": s[1]},
        "stop_sequences": [s[2]],
        "tools": [{"name": "lookup", "description": f"ask {s[3]}",
                   "input_schema": {"type": "object", "description": s[4],
                                    "properties": {"who": {"type": "string", "enum": [s[5]],
                                                           "description": f"e.g. {s[6]}"}}}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "title": f"from {s[7]}", "context": f"cc {s[8]}",
                 "source": {"type": "text", "media_type": "text/plain", "data": f"write to {s[9]}"}},
                {"type": "text", "text": f"reply to {s[10]}"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"noted {s[11]}"}]},
            {"role": "user", "content": "thanks"}],
    }
    n0 = len(mock.requests())
    with requests.post(gateway.url + "/v1/messages", json=body, timeout=30,
                                headers=gateway.headers(), stream=stream) as r:
        text = r.text
    assert r.status_code == 200, text
    assert _leaked(mock, n0, 12) == []


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api_sends_no_seeded_value(gateway, mock, stream):
    s = [_seed(i) for i in range(9)]
    body = {
        "model": "chat", "stream": stream, "instructions": f"you serve {s[0]}",
        "user": s[1], "metadata": {"owner": s[2]},
        "tools": [{"type": "function", "name": "lookup", "description": f"ask {s[3]}",
                   "parameters": {"type": "object", "properties": {
                       "who": {"type": "string", "description": s[4], "enum": [s[5]]}}}}],
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": f"mail {s[6]}"}]},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": orjson.dumps({"who": s[7]}).decode()},
            {"type": "function_call_output", "call_id": "c1", "output": f"found {s[8]}"}],
        "store": False,
    }
    n0 = len(mock.requests())
    with requests.post(gateway.url + "/v1/responses", json=body, timeout=30,
                                headers=gateway.headers(), stream=stream) as r:
        text = r.text
    assert r.status_code == 200, text
    assert _leaked(mock, n0, 9) == []
