"""Malformed client requests for fuzzing the gateway (tests and bench/fuzz.py).

``cases(n, seed)`` yields ``(api, body_bytes)`` pairs: ``api`` is ``chat``
(``/v1/chat/completions``), ``anthropic`` (``/v1/messages``) or ``embeddings``.
Each case starts from a valid request and breaks it: a field replaced by a value
of the wrong type or shape, at the top level, inside a message, a content part, a
tool or a tool call; thousands of messages; deep nesting; bytes that are not JSON.
Every request is a client's mistake or a valid oddity: the gateway must answer it
with a 4xx in the API's format (or serve it), never a 5xx of its own.
"""
from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from typing import Any

import orjson

# values of the wrong type or shape
ODD: list[Any] = ["x", "", 0, -1, 1.5, True, False, None, {}, [], {"type": {}},
                  [None], [1], ["x"], [{}], [[]], {"a": 1}, 1e30, {"type": "x"}, {"type": None},
                  {"type": "text"}, {"type": "function"}, {"type": "image_url"},
                  [{"type": {}}], [{"type": "text", "text": 1}], "\u0000", "\ud7ff" * 3]

CHAT_TOP = ["model", "messages", "stream", "stream_options", "tools", "functions", "function_call",
            "tool_choice", "max_tokens", "max_completion_tokens", "n", "temperature", "top_p", "stop",
            "response_format", "user", "metadata", "logit_bias", "seed", "parallel_tool_calls",
            "presence_penalty", "modalities", "audio", "prediction", "store", "reasoning_effort"]
MSG_KEYS = ["role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal"]
PART_KEYS = ["type", "text", "image_url", "input_audio", "file"]
TOOL_KEYS = ["type", "function"]
FN_KEYS = ["name", "description", "parameters", "strict"]
CALL_KEYS = ["id", "type", "function"]
ANTH_TOP = ["model", "messages", "max_tokens", "system", "tools", "tool_choice", "stop_sequences",
            "stream", "temperature", "top_p", "top_k", "metadata", "thinking"]
ANTH_BLOCK = ["type", "text", "source", "id", "name", "input", "tool_use_id", "content", "cache_control"]
ANTH_TOOL = ["name", "description", "input_schema", "type", "cache_control"]
EMB_TOP = ["model", "input", "dimensions", "encoding_format", "user"]

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "weather",
                                          "parameters": {"type": "object",
                                                         "properties": {"city": {"type": "string"}}}}}


def chat_base(rng: random.Random) -> dict[str, Any]:
    return {"model": rng.choice(["chat", "gpt-4o-mini", "claude-sonnet", "gemini-flash", "mistral-small"]),
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "hello"},
                                                      {"type": "image_url",
                                                       "image_url": {"url": "https://example.com/a.png"}}]},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "call_1", "type": "function",
                              "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                         {"role": "user", "content": "REPLY:ok"}],
            "tools": [TOOL], "max_tokens": 50, "stream": rng.random() < 0.3}


def anthropic_base(rng: random.Random) -> dict[str, Any]:
    return {"model": rng.choice(["claude-sonnet", "chat", "gemini-flash", "mistral-small"]),
            "max_tokens": 50, "system": [{"type": "text", "text": "be brief"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                         {"role": "assistant", "content": [
                             {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1",
                                                       "content": [{"type": "text", "text": "sunny"}]},
                                                      {"type": "text", "text": "REPLY:ok"}]}],
            "tools": [{"name": "get_weather", "description": "weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "stream": rng.random() < 0.3}


def embeddings_base(rng: random.Random) -> dict[str, Any]:
    return {"model": "text-embedding-3-small", "input": ["a", "b"]}


def _set(rng: random.Random, obj: dict[str, Any], keys: list[str]) -> None:
    obj[rng.choice(keys)] = copy.deepcopy(rng.choice(ODD))


def _mutate_chat(rng: random.Random, body: dict[str, Any]) -> None:
    msgs = body["messages"]
    where = rng.randrange(7)
    if where == 0:
        _set(rng, body, CHAT_TOP)
    elif where == 1:
        _set(rng, rng.choice(msgs), MSG_KEYS)
    elif where == 2:
        _set(rng, rng.choice(msgs[1]["content"]), PART_KEYS)
    elif where == 3:
        _set(rng, body["tools"][0], TOOL_KEYS)
    elif where == 4:
        _set(rng, body["tools"][0]["function"], FN_KEYS)
    elif where == 5:
        call = msgs[2]["tool_calls"][0]
        if rng.random() < 0.5:
            _set(rng, call, CALL_KEYS)
        else:
            _set(rng, call["function"], ["name", "arguments"])
    else:
        msgs[rng.randrange(len(msgs))] = copy.deepcopy(rng.choice(ODD))


def _mutate_anthropic(rng: random.Random, body: dict[str, Any]) -> None:
    msgs = body["messages"]
    where = rng.randrange(6)
    if where == 0:
        _set(rng, body, ANTH_TOP)
    elif where == 1:
        _set(rng, rng.choice(msgs), ["role", "content"])
    elif where == 2:
        _set(rng, rng.choice(rng.choice(msgs)["content"]), ANTH_BLOCK)
    elif where == 3:
        _set(rng, body["tools"][0], ANTH_TOOL)
    elif where == 4:
        _set(rng, msgs[2]["content"][0]["content"][0], ["type", "text"])
    else:
        _set(rng, body["system"][0], ["type", "text", "cache_control"])


def _many_messages(rng: random.Random, api: str) -> dict[str, Any]:
    n = rng.choice([2049, 3000, 6000, 12000])
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} hello"} for i in range(n)]
    if api == "anthropic":
        return {"model": "claude-sonnet", "max_tokens": 10, "messages": msgs}
    return {"model": "chat", "messages": msgs}


def _raw(rng: random.Random) -> bytes:
    return rng.choice([b"", b"{", b"[]", b"null", b"1", b'"x"', b"\xff\xfe{}", b'{"model": "chat",}',
                       b'{"messages": NaN}', b"[" * 2000 + b"]" * 2000,
                       b'{"a":' * 600 + b"1" + b"}" * 600, b'{"model": 1e400}',
                       b'{"model":"chat","messages":[{"role":"user","content":"\\ud800"}]}'])


def _try(mutate, rng: random.Random, body: dict[str, Any]) -> None:
    # an earlier mutation may have replaced the part this one would change
    with contextlib.suppress(TypeError, KeyError, IndexError, AttributeError):
        mutate(rng, body)


def cases(n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for _ in range(n):
        api = rng.choice(["chat", "chat", "anthropic", "anthropic", "embeddings"])
        r = rng.random()
        if r < 0.05:
            yield api, _raw(rng)
            continue
        if r < 0.07:
            yield api if api != "embeddings" else "chat", orjson.dumps(
                _many_messages(rng, api if api != "embeddings" else "chat"))
            continue
        if api == "chat":
            body = chat_base(rng)
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                _try(_mutate_chat, rng, body)
        elif api == "anthropic":
            body = anthropic_base(rng)
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                _try(_mutate_anthropic, rng, body)
        else:
            body = embeddings_base(rng)
            _set(rng, body, EMB_TOP)
        yield api, orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


PATHS = {"chat": "/v1/chat/completions", "anthropic": "/v1/messages", "embeddings": "/v1/embeddings"}
