"""Issue 16: the agent clients pointed at the gateway.

* Claude Code: its request shapes (tests/fixtures/clients/claude_code.json, written from
  its public docs and source) sent with both of its credentials.
* The OpenAI Agents SDK (the real ``openai-agents`` package): an agent with a function
  tool runs its loop over the Responses API, streamed and not, to several provider types.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import requests

from aigw_dev.dev import DEMO_API_KEY, demo_token

FIX = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "clients" / "claude_code.json").read_text())


def _post(gw, case: str, auth: dict[str, str], body: dict | None = None, stream: bool = False):
    c = FIX[case]
    return requests.post(gw.url + c["path"], headers={**FIX["headers"], **auth}, json=body or c["body"],
                         stream=stream, timeout=30)


def _events(resp) -> list[tuple[str, dict]]:
    out, name = [], None
    for line in resp.iter_lines():
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            out.append((name, json.loads(line[6:])))
    return out


AUTHS = {"ANTHROPIC_AUTH_TOKEN": lambda: {"authorization": f"Bearer {demo_token()}"},
         "ANTHROPIC_API_KEY": lambda: {"x-api-key": DEMO_API_KEY}}


@pytest.mark.parametrize("cred", list(AUTHS))
def test_claude_code_session(gateway, mock, cred):
    auth = AUTHS[cred]()
    # start-up quota probe (max_tokens 1, haiku) and the streamed title request
    probe = _post(gateway, "quota_probe", auth)
    assert probe.status_code == 200, probe.text
    assert probe.json()["type"] == "message"
    with _post(gateway, "title", auth, stream=True) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kinds = [n for n, _ in _events(r)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    # the main turn: cached system/tools/message blocks, thinking, tools, streamed
    n0 = len(mock.requests())
    with _post(gateway, "turn", auth, stream=True) as r:
        assert r.status_code == 200, r.text
        events = _events(r)
    sent = next(x for x in mock.requests()[n0:] if x["path"] == "/v1/messages")
    turn = FIX["turn"]["body"]
    assert sent["body"]["system"] == turn["system"] and sent["body"]["tools"] == turn["tools"]
    assert sent["body"]["thinking"] == turn["thinking"] and sent["body"]["metadata"] == turn["metadata"]
    assert sent["headers"]["anthropic-beta"] == FIX["headers"]["anthropic-beta"]
    assert "dev.lead@example.com" not in json.dumps(sent["body"])  # redacted on the way
    assert sent["body"]["messages"][0]["content"][1]["cache_control"] == {"type": "ephemeral"}
    # rebuild the assistant turn as Claude Code does from the events
    blocks: dict[int, dict] = {}
    usage = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = dict(data["content_block"])
        elif name == "content_block_delta":
            b, d = blocks[data["index"]], data["delta"]
            if d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] = d["signature"]
            elif d["type"] == "input_json_delta":
                b["_json"] = b.get("_json", "") + d["partial_json"]
        elif name == "message_delta":
            usage = data["usage"]
        elif name == "message_start":
            usage = data["message"]["usage"]
    assert [b["type"] for b in blocks.values()] == ["thinking", "tool_use"]
    assert usage.get("output_tokens") is not None
    tool = blocks[1]
    tool["input"] = json.loads(tool.pop("_json"))
    # next turn: the signed thinking block and the tool_use go back with the tool result
    nxt = dict(turn, messages=turn["messages"] + [
        {"role": "assistant", "content": [blocks[0], tool]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool["id"],
                                      "content": "3 passed", "cache_control": {"type": "ephemeral"}}]}])
    with _post(gateway, "turn", auth, body=nxt, stream=True) as r:
        assert r.status_code == 200, r.text
        text = "".join(d["delta"].get("text", "") for n, d in _events(r) if n == "content_block_delta")
    # the mock echoes the last user text; the gateway restores the email it redacted
    assert "dev.lead@example.com" in text
    # /context: count_tokens
    r = _post(gateway, "count_tokens", auth)
    assert r.status_code == 200 and isinstance(r.json()["input_tokens"], int)
    assert r.headers["x-ai-token-count"] == "exact"


def test_claude_code_without_credentials_is_refused(gateway, mock):
    n0 = len(mock.requests())
    r = _post(gateway, "quota_probe", {})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert mock.requests()[n0:] == []


# ---------------------------------------------------------------- OpenAI Agents SDK

def _agent_run(gw, model: str, stream: bool):
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool
    from openai import AsyncOpenAI

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=gw.url + "/v1", api_key=demo_token(), max_retries=0)
    agent = Agent(name="assistant", instructions="You answer weather questions.",
                  model=OpenAIResponsesModel(model, client), tools=[get_weather])
    cfg = RunConfig(tracing_disabled=True)

    async def go():
        if stream:
            res = Runner.run_streamed(agent, "CALL_TOOL what is the weather?", run_config=cfg)
            kinds = [e.type async for e in res.stream_events()]
            assert "raw_response_event" in kinds
            return res
        return await Runner.run(agent, "CALL_TOOL what is the weather?", run_config=cfg)

    return asyncio.run(go()), calls


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet", "gemini-flash", "mistral-small"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_agents_sdk_tool_loop(gateway, mock, model, stream):
    n0 = len(mock.requests())
    result, calls = _agent_run(gateway, model, stream)
    assert calls == ["Paris"]  # the model's function call reached the tool
    # after the tool output the mock echoes the user's question
    assert result.final_output == "Echo: CALL_TOOL what is the weather?"
    sent = [r for r in mock.requests()[n0:] if not r["path"].startswith("/_mock")]
    assert len(sent) == 2
    assert "sunny in Paris" in json.dumps(sent[1]["body"])
    assert "You answer weather questions." in json.dumps(sent[1]["body"])
