"""Responses API ingress: translation, typed events, state; the Anthropic pass-through's
restore of split placeholders; reasoning carried to the Anthropic ingress."""
from __future__ import annotations

import json

import orjson
import pytest

from aigw.errors import GatewayError
from aigw.ingress import anthropic as anth
from aigw.ingress import responses as r
from aigw.ingress.responses_state import MemoryState
from aigw.sse import SSEDecoder
from aigw.types import Usage


def events(raw: list[bytes]) -> list[dict]:
    dec = SSEDecoder()
    out = []
    for b in raw:
        for ev in dec.feed(b):
            data = json.loads(ev.data)
            assert ev.event == data["type"]
            out.append(data)
    return out


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_items_become_canonical_messages_with_merged_tool_calls():
    canonical, turn = r.to_chat({"model": "m", "instructions": "sys", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "t"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": ""},
        {"type": "function_call_output", "call_id": "c1", "output": "o1"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "o2"}]},
        {"type": "reasoning", "id": "rs", "summary": []},
        {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
    ], "max_output_tokens": 50, "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False, "stream": True})
    msgs = canonical["messages"]
    assert msgs[0] == {"role": "system", "content": "sys"}
    assert msgs[1] == {"role": "user", "content": "ab"}
    assert msgs[2]["content"] == "t" and [c["id"] for c in msgs[2]["tool_calls"]] == ["c1", "c2"]
    assert msgs[2]["tool_calls"][1]["function"]["arguments"] == "{}"
    assert msgs[3] == {"role": "tool", "tool_call_id": "c1", "content": "o1"}
    assert msgs[4]["content"] == "o2"
    assert msgs[5]["content"][0]["type"] == "image_url"
    assert canonical["max_tokens"] == 50 and canonical["parallel_tool_calls"] is False
    assert canonical["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert canonical["stream_options"] == {"include_usage": True}
    assert turn == msgs[1:]  # instructions are not part of the kept conversation


def test_history_is_prepended_and_not_aliased():
    hist = [{"role": "user", "content": "h"}, {"role": "assistant", "content": "a"}]
    canonical, turn = r.to_chat({"model": "m", "input": "x"}, hist)
    canonical["messages"][0]["content"] = "changed by redaction"
    assert hist[0]["content"] == "h" and turn[0]["content"] == "h"


@pytest.mark.parametrize("body,param", [
    ([], "body"),
    ({"model": 1, "input": "x"}, "model"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}]},
     "input[0].content"),
    ({"input": [{"type": "input_file", "file_id": "f"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]}, "input[0].output"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "metadata": []}, "metadata"),
    ({"input": []}, "input"),
])
def test_bad_shapes_name_the_field(body, param):
    with pytest.raises(GatewayError) as e:
        r.to_chat(body)
    assert e.value.status == 400 and e.value.param == param


def test_stream_encoder_events_in_order_with_tools_and_usage():
    shell = r.Shell({"instructions": "i"}, "chat")
    saved = []
    enc = r.StreamEncoder(shell, on_done=saved.append)
    raw = enc.feed(chunk({"role": "assistant", "content": ""}))
    raw += enc.feed(chunk({"reasoning_content": "th"}))
    raw += enc.feed(chunk({"content": "Hel"})) + enc.feed(chunk({"content": "lo"}))
    raw += enc.feed(chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}))
    raw += enc.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}))
    raw += enc.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "tool_calls"))
    raw += enc.close(Usage(input_tokens=7, output_tokens=3, cache_read_tokens=2, reasoning_tokens=1))
    evs = events(raw)
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    types = [e["type"] for e in evs]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    added = [e for e in evs if e["type"] == "response.output_item.added"]
    assert [a["item"]["type"] for a in added] == ["reasoning", "message", "function_call"]
    assert [a["output_index"] for a in added] == [0, 1, 2]
    done = evs[-1]["response"]
    assert done["status"] == "completed" and done["id"] == evs[0]["response"]["id"]
    assert done["output"][1]["content"][0]["text"] == "Hello"
    assert done["output"][2]["arguments"] == '{"a":1}' and done["output"][2]["status"] == "completed"
    assert done["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2},
                             "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1},
                             "total_tokens": 10}
    assert saved == [done]
    assert enc.close(None) == [] and enc.feed(chunk({"content": "late"})) == []


def test_length_finish_is_incomplete_and_errors_are_response_failed():
    enc = r.StreamEncoder(r.Shell({}, "m"))
    enc.feed(chunk({"content": "x"}, "length"))
    last = events(enc.close(None))[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    enc = r.StreamEncoder(r.Shell({}, "m"))
    enc.feed(chunk({"content": "x"}))
    failed = events([enc.error("broken")])[0]
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"


def test_output_messages_for_the_next_turn():
    out = r.build_response({"choices": [{"message": {"content": "hi", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]},
        r.Shell({}, "m"), Usage())
    assert r.output_messages(out["output"]) == [{"role": "assistant", "content": "hi", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]


def test_memory_state_is_scoped_and_expires(monkeypatch):
    import aigw.ingress.responses_state as st
    clock = [1000.0]
    monkeypatch.setattr(st.time, "monotonic", lambda: clock[0])
    s = MemoryState(ttl=60)
    s.put("alice", "resp_1", {"messages": [1]})
    assert s.get("alice", "resp_1") == {"messages": [1]}
    assert s.get("bob", "resp_1") is None and s.get(None, "resp_1") is None
    clock[0] += 61
    assert s.get("alice", "resp_1") is None


# ----------------------------------------------- Anthropic pass-through restore

def test_native_stream_restores_placeholders_split_anywhere_and_leaves_thinking():
    from aigw.context import Outcome, RequestContext
    from aigw.gateway.egress import RawEgress
    from aigw.gateway.redact import RedactStage, RedactState
    from aigw.pipeline import Exchange
    from aigw.providers.anthropic import AnthropicAdapter
    from aigw.relay.native import NativeStream
    from aigw.sse import encode

    def ev(obj):
        return encode(obj, obj["type"])
    stream = b"".join([
        ev({"type": "message_start", "message": {"id": "m", "model": "x", "usage": {"input_tokens": 3}}}),
        ev({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ev({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "<EMAIL_1>"}}),
        ev({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
        ev({"type": "content_block_stop", "index": 0}),
        ev({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ev({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "to <EMA"}}),
        ev({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "IL_1> ok <EMAIL_"}}),
        ev({"type": "content_block_stop", "index": 1}),
        ev({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        ev({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"k\": \"<KEY"}}),
        ev({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "_1>\"}"}}),
        ev({"type": "content_block_stop", "index": 2}),
        ev({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
        ev({"type": "message_stop"}),
    ])
    restore = {"<EMAIL_1>": "a@b.c", "<KEY_1>": "line1\nline2"}
    stage, egress = RedactStage({}), RawEgress()
    for split in (1, 7, 50, 333, len(stream) - 3):
        ctx = RequestContext(id="t", api="anthropic", path="/v1/messages", headers={}, raw_body=b"",
                             consumer=None)  # no limit reserved output: nothing to cut
        ctx.slot(RedactState).restore_map = dict(restore)
        ex = Exchange(outcome=Outcome(), stream=True, wire="anthropic")
        ns = NativeStream(ctx, ex, AnthropicAdapter(), type("T", (), {"model": "x"})())
        out = []

        def relay(events, ns=ns, out=out, ctx=ctx, ex=ex):  # this iteration's stream
            for e in events:
                for item in ns.event(e):
                    out.extend(egress.chunk(o) for o in stage.chunk(ctx, ex, item))
        for piece in (stream[:split], stream[split:]):
            relay(ns.decode(piece))
        relay(ns.close_decoders())
        got = events(out)
        thinking = "".join(e["delta"].get("thinking", "") for e in got if e["type"] == "content_block_delta")
        text = "".join(e["delta"].get("text", "") for e in got
                       if e["type"] == "content_block_delta" and e["index"] == 1)
        args = "".join(e["delta"].get("partial_json", "") for e in got
                       if e["type"] == "content_block_delta" and e["index"] == 2)
        assert thinking == "<EMAIL_1>"          # signed content is never changed
        assert text == "to a@b.c ok <EMAIL_"     # an unknown partial tag is released at block end
        assert json.loads(args) == {"k": "line1\nline2"}
        assert ns.finished and ns.canonical.usage.output_tokens == 5


def test_unsigned_thinking_blocks_are_dropped_before_an_anthropic_target():
    from aigw.relay.native import _signed_only
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "from gemini", "signature": ""},
                                              {"type": "thinking", "thinking": "real", "signature": "sig"},
                                              {"type": "text", "text": "a"}]}, "junk"]
    out = _signed_only(msgs)
    assert [b["thinking"] for b in out[1]["content"] if b["type"] == "thinking"] == ["real"]
    assert msgs[1]["content"][0]["signature"] == ""  # the client's body is not mutated


def test_reasoning_from_other_providers_becomes_thinking_blocks_for_anthropic_clients():
    msg = anth.from_openai_response({"choices": [{"message": {"content": "x", "reasoning_content": "why"},
                                                  "finish_reason": "stop"}]}, "m")
    assert msg["content"][0] == {"type": "thinking", "thinking": "why", "signature": ""}
    enc = anth.StreamEncoder("m")
    raw = enc.feed(chunk({"reasoning_content": "w"})) + enc.feed(chunk({"content": "x"}, "stop"))
    raw += enc.close(Usage(input_tokens=1, output_tokens=1))
    got = events(raw)
    starts = [e["content_block"]["type"] for e in got if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]


def test_anthropic_lenient_translation_lists_what_only_anthropic_reads():
    dropped: list[str] = []
    out = anth.to_openai_request({"model": "m", "max_tokens": 5, "tools": [
        {"type": "web_search_20250305", "name": "web_search"}, {"name": "f", "input_schema": {}}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "AA"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
            {"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}]}]}, dropped=dropped)
    assert sorted(dropped) == ["document", "web_search_20250305"]
    assert [t["function"]["name"] for t in out["tools"]] == ["f"]
    # parts stay parts: joining them would change what the model reads (issue 12)
    assert out["messages"][0]["content"] == [{"type": "text", "text": "plain"}, {"type": "text", "text": "q"}]
    with pytest.raises(GatewayError):
        anth.to_openai_request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "data": "AA"}}]}]})


def test_state_entries_are_json_round_trippable():
    s = MemoryState(ttl=60)
    s.put("a", "r", {"messages": [{"role": "user", "content": "é\u2028"}]})
    assert orjson.dumps(s.get("a", "r"))


# ------------------------------------------------ OpenAI Responses upstream adapter

def test_responses_upstream_request_and_stream_split_at_every_byte():
    from aigw.providers.openai_responses import ADAPTER, to_responses
    from aigw.types import ProviderConfig
    canonical = {"model": "x", "max_tokens": 9, "reasoning_effort": "low", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "q"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
        {"role": "assistant", "content": "a", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "out"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}}
    body = to_responses(canonical, "gpt-4o-mini", stream=True)
    assert body["instructions"] == "sys" and body["store"] is False and body["stream"] is True
    assert [i["type"] for i in body["input"]] == ["message", "message", "function_call", "function_call_output"]
    assert body["input"][0]["content"][1] == {"type": "input_image", "image_url": "data:image/png;base64,AA"}
    assert body["tools"] == [{"type": "function", "name": "f", "parameters": {}, "strict": True}]
    assert body["tool_choice"] == {"type": "function", "name": "f"}
    assert body["text"] == {"format": {"type": "json_schema", "name": "n", "schema": {}}}
    assert body["max_output_tokens"] == 9
    req = ADAPTER.chat_request(canonical, "gpt-4o-mini", ProviderConfig("o", "openai", "https://h/v1", "k"),
                               stream=True)
    assert req.url == "https://h/v1/responses" and req.headers["authorization"] == "Bearer k"

    from aigw_dev.mock.behaviour import Faults, Reply
    from aigw_dev.mock.responses_api import _stream
    resp = {"id": "resp_1", "object": "response", "created_at": 5, "status": "completed", "model": "m",
            "output": [{"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "Reasoning it through."}]},
                       {"type": "function_call", "id": "fc", "call_id": "call_9", "name": "f",
                        "arguments": '{"city": "Paris"}', "status": "completed"}],
            "usage": {"input_tokens": 4, "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2},
                      "input_tokens_details": {"cached_tokens": 1}}}
    raw = b"".join(_stream(resp, Reply("", "f"), Faults()).events)
    for i in range(0, len(raw), 7):
        dec = ADAPTER.chat_stream("m")
        chunks = dec.feed(raw[:i]) + dec.feed(raw[i:]) + dec.close()
        reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
        args = "".join(tc["function"].get("arguments", "") for c in chunks if c["choices"]
                       for tc in c["choices"][0]["delta"].get("tool_calls") or [])
        assert reasoning == "Reasoning it through." and json.loads(args) == {"city": "Paris"}
        assert dec.done and dec.finish_reason == "tool_calls"
        assert dec.usage == Usage(input_tokens=4, output_tokens=6, cache_read_tokens=1, reasoning_tokens=2)
        assert chunks[-1]["usage"]["prompt_tokens"] == 4
    out = ADAPTER.chat_response(orjson.dumps(resp), "m")
    assert out["choices"][0]["message"]["tool_calls"][0]["id"] == "call_9"
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_responses_upstream_errors():
    from aigw.providers.base import ProviderProtocolError, UpstreamStreamError
    from aigw.providers.openai_responses import ADAPTER
    with pytest.raises(ProviderProtocolError):
        ADAPTER.chat_response(b'{"no": "output"}', "m")
    dec = ADAPTER.chat_stream("m")
    with pytest.raises(UpstreamStreamError):
        dec.feed(b'event: response.failed\ndata: {"type": "response.failed", "response": {"error": {"message": "x"}}}\n\n')
    inc = ADAPTER.chat_response(orjson.dumps({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                                              "output": []}), "m")
    assert inc["choices"][0]["finish_reason"] == "length"
