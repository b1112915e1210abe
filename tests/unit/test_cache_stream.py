"""replay_stream / assemble_stream."""
from __future__ import annotations

import copy

import pytest

from aigw.cache import Entry, assemble_stream, replay_stream
from aigw.sse import DONE, SSEDecoder, encode

USAGE = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
         "prompt_tokens_details": {"cached_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0}}


def completion(message: dict, finish: str = "stop", **top) -> dict:
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1732460000,
            "model": "gpt-4o-mini-2024-07-18", **top,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish}],
            "usage": USAGE}


TEXT = completion({"role": "assistant",
                   "content": "Bonjour <PERSON_1> ! 日本語 🙂 " + "lorem ipsum " * 20,
                   "refusal": None, "annotations": []},
                  system_fingerprint="fp_123")
TOOLS = completion({"role": "assistant", "content": None, "refusal": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c", "days": ' + "1" * 80 + "}"}},
    {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": "{}"}},
]}, finish="tool_calls")
TEXT_AND_TOOL = completion({"role": "assistant", "content": "Let me check.", "tool_calls": [
    {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}]},
    finish="tool_calls")
EMPTY = completion({"role": "assistant", "content": ""}, finish="length")
REFUSAL = completion({"role": "assistant", "content": None, "refusal": "I can't help with that."})
LOGPROBS = completion({"role": "assistant", "content": "Hi"})
LOGPROBS["choices"][0]["logprobs"] = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                                                   "top_logprobs": []}], "refusal": None}

CASES = {"text": TEXT, "tools": TOOLS, "text_and_tool": TEXT_AND_TOOL, "empty": EMPTY,
         "refusal": REFUSAL, "logprobs": LOGPROBS}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_equals_original(name):
    original = CASES[name]
    entry = Entry(response=copy.deepcopy(original), created=1.0, model="gpt-4o-mini",
                  provider="openai", usage=USAGE)
    chunks = replay_stream(entry, piece_chars=16)
    assert assemble_stream(chunks) == original
    assert entry.response == original  # replay does not mutate the entry


def test_replay_shape():
    chunks = replay_stream(Entry(TEXT, 1.0, "m", "openai", USAGE), piece_chars=16)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-abc" for c in chunks)
    assert all(c["system_fingerprint"] == "fp_123" for c in chunks)
    first = chunks[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["delta"]["content"] == ""
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(pieces) > 5 and all(0 < len(p) <= 16 for p in pieces)
    assert "".join(pieces) == TEXT["choices"][0]["message"]["content"]
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])


def test_replay_tool_call_chunks_carry_id_once():
    chunks = replay_stream(Entry(TOOLS, 1.0, "m", "openai", USAGE), piece_chars=10)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    tcs = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert [tc.get("id") for tc in tcs if "id" in tc] == ["call_1", "call_2"]
    assert sum(1 for tc in tcs if tc["index"] == 0) > 5  # arguments in pieces


def test_replay_without_usage_chunk():
    chunks = replay_stream(Entry(TEXT, 1.0, "m", "openai", USAGE), include_usage=False)
    assert all(c["choices"] for c in chunks)


def test_usage_falls_back_to_entry_usage():
    resp = copy.deepcopy(TEXT)
    del resp["usage"]
    chunks = replay_stream(Entry(resp, 1.0, "m", "openai", USAGE))
    assert chunks[-1]["usage"] == USAGE


def test_round_trip_through_sse_bytes():
    """Relay path: SSE-encode the replay, split bytes arbitrarily, decode, assemble."""
    wire = b"".join(encode(c) for c in replay_stream(Entry(TOOLS, 1.0, "m", "openai", USAGE))) + DONE
    dec = SSEDecoder()
    events = []
    for i in range(0, len(wire), 7):
        events.extend(dec.feed(wire[i:i + 7]))
    chunks = [e.json() for e in events if e.data != "[DONE]"]
    assert assemble_stream(chunks) == TOOLS


def test_assemble_provider_style_stream():
    """Chunks as OpenAI sends them: role+null content, tool head, argument pieces, usage."""
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 5, "model": "gpt-4o"}

    def ch(delta, finish=None):
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}], "usage": None}

    chunks = [
        ch({"role": "assistant", "content": None,
            "tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                            "function": {"name": "f", "arguments": ""}}]}),
        ch({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        ch({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                            "function": {"name": "g", "arguments": "{}"}}]}),
        ch({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        ch({}, "tool_calls"),
        {**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
    ]
    out = assemble_stream(chunks)
    assert out == {
        "id": "chatcmpl-x", "object": "chat.completion", "created": 5, "model": "gpt-4o",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def test_assemble_multiple_choices_interleaved():
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = []
    for _i, word in enumerate(["one", "two", "three"]):
        for idx in (1, 0):
            chunks.append({**base, "choices": [{"index": idx, "delta": {"content": f"{word}{idx} "}}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"},
                                       {"index": 1, "delta": {}, "finish_reason": "length"}]})
    out = assemble_stream(chunks)
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0]["message"]["content"] == "one0 two0 three0 "
    assert out["choices"][1]["message"]["content"] == "one1 two1 three1 "
    assert [c["finish_reason"] for c in out["choices"]] == ["stop", "length"]
    assert "usage" not in out
