"""Anthropic Messages ingress: golden fixtures, validation, and SDK compatibility."""
from __future__ import annotations

import http.server
import threading
from pathlib import Path

import orjson
import pytest

from aigw.errors import GatewayError
from aigw.ingress.anthropic import StreamEncoder, from_openai_response, to_openai_request
from aigw.providers import get_adapter
from aigw.sse import SSEDecoder
from aigw.types import ProviderConfig, Usage

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "providers" / "ingress_anthropic"
CASES = [pytest.param(p, id=p.name) for p in sorted(ROOT.glob("*/"))]


def load(path: Path):
    return orjson.loads(path.read_bytes())


def events(raw: bytes) -> list[tuple[str | None, object]]:
    dec = SSEDecoder()
    evs = dec.feed(raw) + dec.close()
    return [(e.event, e.json()) for e in evs]


def encode_stream(case: Path) -> bytes:
    meta = load(case / "meta.json")
    enc = StreamEncoder(meta["model"], meta["input_tokens"])
    out = b""
    for chunk in load(case / "canonical_chunks.json"):
        out += b"".join(enc.feed(chunk))
    close = meta["close_usage"]
    out += b"".join(enc.close(Usage(**close) if close else None))
    return out


def test_fixtures_present():
    assert len(CASES) >= 2


@pytest.mark.parametrize("case", CASES)
def test_request(case):
    assert to_openai_request(load(case / "anthropic_request.json")) == \
        load(case / "canonical_request.json")


@pytest.mark.parametrize("case", CASES)
def test_response(case):
    model = load(case / "meta.json")["model"]
    assert from_openai_response(load(case / "canonical_response.json"), model) == \
        load(case / "anthropic_response.json")


@pytest.mark.parametrize("case", CASES)
def test_stream(case):
    got = encode_stream(case)
    assert events(got) == events((case / "anthropic_stream.sse").read_bytes())
    for frame in got.split(b"\n\n")[:-1]:
        assert frame.startswith(b"event: ")


# -- behaviour ---------------------------------------------------------------

def base_request(**kw) -> dict:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **kw}


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    (base_request(max_tokens="10"), "max_tokens"),
    (base_request(messages=[]), "messages"),
    (base_request(messages=[{"role": "system", "content": "secret words"}]), "messages[0].role"),
    (base_request(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages[0]"),
    (base_request(messages=[{"role": "user", "content": 5}]), "messages[0]"),
    (base_request(stream="yes"), "stream"),
    (base_request(stop_sequences="END"), "stop_sequences"),
    (base_request(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools"),
    (base_request(tools=[{"name": "t", "input_schema": {}}], tool_choice={"type": "maybe"}),
     "tool_choice"),
    (base_request(system=[{"type": "image"}]), "system"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
])
def test_request_rejects_invalid_shapes(body, param):
    with pytest.raises(GatewayError) as exc:
        to_openai_request(body)
    assert exc.value.status == 400
    assert exc.value.param == param
    assert "secret words" not in exc.value.message


def test_tool_choice_none_and_named():
    tools = [{"name": "t", "input_schema": {"type": "object"}}]
    none = to_openai_request(base_request(tools=tools, tool_choice={"type": "none"}))
    assert none["tool_choice"] == "none" and "parallel_tool_calls" not in none
    named = to_openai_request(base_request(tools=tools, tool_choice={"type": "tool", "name": "t"}))
    assert named["tool_choice"] == {"type": "function", "function": {"name": "t"}}
    auto = to_openai_request(base_request(tools=tools, tool_choice={"type": "auto"}))
    assert auto["tool_choice"] == "auto"


def test_round_trip_through_anthropic_adapter():
    """Anthropic request -> canonical -> Anthropic provider request keeps the meaning."""
    src = load(ROOT / "tools" / "anthropic_request.json")
    canonical = to_openai_request(src)
    provider = ProviderConfig(name="a", type="anthropic", base_url="https://api.anthropic.com",
                              api_key="k")
    body = orjson.loads(get_adapter("anthropic").chat_request(
        canonical, "claude-x", provider, stream=True).body)
    assert body["system"] == "You are a weather bot.\n\nBe brief."
    assert body["max_tokens"] == src["max_tokens"]
    assert body["stop_sequences"] == src["stop_sequences"]
    assert body["tool_choice"] == src["tool_choice"]
    assert body["tools"] == src["tools"]
    assert body["stream"] is True
    # same turns, same order; thinking blocks are not replayed
    assert [m["role"] for m in body["messages"]] == [m["role"] for m in src["messages"]]
    assert body["messages"][1]["content"] == src["messages"][1]["content"][1:]
    assert body["messages"][0]["content"] == src["messages"][0]["content"]
    tool_turn = body["messages"][2]["content"]
    assert tool_turn[0] == {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"}


def test_encoder_empty_stream_still_well_formed():
    enc = StreamEncoder("m")
    evs = events(b"".join(enc.close(None)))
    assert [e[0] for e in evs] == ["message_start", "message_delta", "message_stop"]
    assert evs[1][1]["delta"]["stop_reason"] == "end_turn"
    assert enc.close(None) == []  # idempotent


def test_encoder_close_usage_overrides_stream_usage():
    enc = StreamEncoder("m", input_tokens=3)
    enc.feed({"id": "x", "choices": [{"index": 0, "delta": {"content": "a"},
                                      "finish_reason": "stop"}]})
    enc.feed({"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}})
    evs = events(b"".join(enc.close(Usage(input_tokens=9, output_tokens=2))))
    delta = next(e for e in evs if e[0] == "message_delta")[1]
    assert delta["usage"]["input_tokens"] == 9 and delta["usage"]["output_tokens"] == 2


def test_encoder_ignores_other_choices_and_parallel_tools():
    enc = StreamEncoder("m")
    out = b""
    for c in [
        {"id": "x", "choices": [{"index": 1, "delta": {"content": "other"}}]},
        {"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"name": "a", "arguments": "{}"}},
            {"index": 1, "id": "c2", "function": {"name": "b", "arguments": "{\"k\":1}"}}]}}]},
    ]:
        out += b"".join(enc.feed(c))
    out += b"".join(enc.close(None))
    evs = events(out)
    starts = [e[1] for e in evs if e[0] == "content_block_start"]
    assert [s["content_block"]["name"] for s in starts] == ["a", "b"]
    assert [s["index"] for s in starts] == [0, 1]
    assert b"other" not in out
    stops = [e[1]["index"] for e in evs if e[0] == "content_block_stop"]
    assert stops == [0, 1]


# -- the official SDK reads what we write ------------------------------------

class _OneShot(http.server.BaseHTTPRequestHandler):
    body = b""
    content_type = "text/event-stream"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", self.content_type)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(body: bytes, content_type: str) -> str:
        handler = type("H", (_OneShot,), {"body": body, "content_type": content_type})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_anthropic_sdk_accumulates_our_stream(serve):
    anthropic = pytest.importorskip("anthropic")
    case = ROOT / "tools"
    url = serve(encode_stream(case), "text/event-stream")
    client = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0)
    with client.messages.stream(model="gateway-model", max_tokens=10,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    expected = load(case / "anthropic_response.json")
    got = final.model_dump(exclude_none=True)
    assert got["content"] == expected["content"]
    assert got["stop_reason"] == expected["stop_reason"]
    assert got["usage"]["output_tokens"] == expected["usage"]["output_tokens"]
    assert got["usage"]["cache_read_input_tokens"] == \
        expected["usage"]["cache_read_input_tokens"]


def test_anthropic_sdk_parses_our_message(serve):
    anthropic = pytest.importorskip("anthropic")
    case = ROOT / "tools"
    body = orjson.dumps(from_openai_response(load(case / "canonical_response.json"), "claude"))
    url = serve(body, "application/json")
    client = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0)
    msg = client.messages.create(model="claude", max_tokens=10,
                                 messages=[{"role": "user", "content": "hi"}])
    assert msg.content[1].input == {"city": "Rome"}
    assert msg.usage.input_tokens == 372
