"""Issue 12, item 1: every string a provider receives was scanned, or is on the explicit
list of fields a model does not read.

Requests carry a sentinel value (an e-mail address, which every configuration
detects) in every string field, known or not.  Sent *unscanned* through the
ingress and every provider adapter, the sentinels show up in the provider
payloads (so the check below can fail); sent after ``scan_request``, none may.
A field some adapter starts forwarding is caught here unless it is scanned.
"""
from __future__ import annotations

import copy
import itertools
import re

import orjson
import pytest

from aigw.errors import GatewayError
from aigw.ingress.anthropic import to_openai_request
from aigw.providers import ADAPTERS
from aigw.redact import RedactConfig, scan_request
from aigw.redact.fields import PROFILES, walk
from aigw.types import ProviderConfig

CFG = RedactConfig.from_dict({"entities": ["email"]})
SENTINEL = re.compile(r"sentinel\d+@example\.com")
_n = itertools.count(1)


def s() -> str:
    return f"sentinel{next(_n)}@example.com"


def schema() -> dict:
    return {"type": "object", "title": s(), "description": s(),
            "properties": {s(): {"type": "string", "description": s(), "enum": [s(), s()],
                                 "default": s(), "examples": [s()], "const": s(), "pattern": s(),
                                 "format": "email"},
                           "n": {"type": "integer", "description": s()}},
            "required": ["n"], "x-unknown": {"nested": [s(), {"deep": s()}]}}


def chat_request() -> dict:
    return {
        "model": "gpt-4o", "user": s(), "metadata": {"user_id": s(), s(): s()},
        "stop": [s(), s()], "seed": 7, "temperature": 0.2, "max_tokens": 50,
        "messages": [
            {"role": "system", "content": s(), "name": s()},
            {"role": "developer", "content": [{"type": "text", "text": s()}]},
            {"role": "user", "name": s(), "content": [
                {"type": "text", "text": s()},
                {"type": "image_url", "image_url": {"url": f"https://img.example.com/{s()}.png",
                                                    "detail": "low"}},
                {"type": "text", "text": s()}]},
            {"role": "assistant", "content": s(), "name": s(), "tool_calls": [
                {"id": "call_" + s(), "type": "function",
                 "function": {"name": "lookup", "arguments": orjson.dumps(
                     {"q": s(), s(): [s(), {"x": s()}]}).decode()}}]},
            {"role": "tool", "tool_call_id": "call_" + s(), "content": s()},
            {"role": "user", "content": s(), "x-unknown-message-field": s()},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": s(),
                                                     "parameters": schema(), "strict": True}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "description": s(), "schema": schema(), "strict": True}},
        "prediction": {"type": "content", "content": s()},
        "x-unknown-top-level": {"a": [s()], "b": s()},
    }


def anthropic_request() -> dict:
    return {
        "model": "claude", "max_tokens": 50, "metadata": {"user_id": s()},
        "system": [{"type": "text", "text": s()}, {"type": "text", "text": s()}],
        "stop_sequences": [s()],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": s()}, {"type": "text", "text": s()}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": s()},
                {"type": "tool_use", "id": "toolu_" + s(), "name": "lookup",
                 "input": {"q": s(), s(): {"deep": [s()]}}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_" + s(), "content": [
                    {"type": "text", "text": s()}]},
                {"type": "tool_result", "tool_use_id": "toolu_" + s(), "content": s()},
                {"type": "text", "text": s()}]},
        ],
        "tools": [{"name": "lookup", "description": s(), "input_schema": schema()}],
        "tool_choice": {"type": "tool", "name": "lookup"},
    }


def embeddings_request() -> dict:
    return {"model": "emb", "input": [s(), s()], "user": s(), "x-unknown": s(), "dimensions": 8}


def _provider(kind: str) -> ProviderConfig:
    return ProviderConfig(name=kind, type=kind, base_url="https://provider.example.com/v1",
                          api_key="k", api_version="2024-06-01")


def _payloads(api: str, body: dict) -> dict[str, str]:
    """What each provider type would receive for ``body``: URL, headers and body as text."""
    canonical = to_openai_request(copy.deepcopy(body)) if api == "anthropic" else copy.deepcopy(body)
    out = {}
    for kind, adapter in ADAPTERS.items():
        for stream in ((False, True) if api != "embeddings" else (False,)):
            try:
                if api == "embeddings":
                    req = adapter.embeddings_request(copy.deepcopy(canonical), "m", _provider(kind))
                else:
                    req = adapter.chat_request(copy.deepcopy(canonical), "m", _provider(kind), stream=stream)
            except GatewayError:
                continue  # this provider cannot take the request at all (nothing is sent)
            out[f"{kind}/{stream}"] = "\n".join([req.url, orjson.dumps(req.headers).decode(),
                                                 (req.body or b"").decode()])
    return out


REQUESTS = {"chat": chat_request, "anthropic": anthropic_request, "embeddings": embeddings_request}


@pytest.mark.parametrize("api", sorted(REQUESTS))
def test_every_forwarded_string_is_scanned(api):
    body = REQUESTS[api]()
    sent = set(SENTINEL.findall(orjson.dumps(body).decode()))
    # unscanned, the sentinels do reach the providers: the check below is not vacuous
    unscanned = _payloads(api, body)
    assert unscanned, "no provider adapter accepted the request"
    forwarded = set().union(*(SENTINEL.findall(p) for p in unscanned.values()))
    assert len(forwarded) >= len(sent) * 0.6, sorted(sent - forwarded)
    # scanned: none of them
    scanned = copy.deepcopy(body)
    result = scan_request(CFG, api, scanned)
    assert result.counts["email"] >= len(sent)
    leaks = {k: SENTINEL.findall(p) for k, p in _payloads(api, scanned).items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}


@pytest.mark.parametrize("api", sorted(REQUESTS))
def test_every_string_is_scanned_or_explicitly_exempt(api):
    """Walk the request ourselves: each string (value or key) is a scan slot, or an
    exemption of the API's profile accepts it (enums, binary data, the model name)."""
    body = REQUESTS[api]()
    w = walk(api, body, 10_000)
    scanned = {(id(sl.parent), sl.key) for sl in w.slots}
    profile = PROFILES[api]
    missing = []

    def visit(parent, key, parent_key, path):
        v = parent[key]
        if isinstance(v, str):
            if (id(parent), key) in scanned or not v:
                return
            ex = profile.exempt.get(f"{parent_key}.{key}") or profile.exempt.get(key)
            if path == ("model",) or (ex is not None and ex(v, parent)):
                return
            if any(d.parent is parent and d.key == key for d in w.jsons):
                return  # a JSON string: its own strings are slots
            missing.append(path)
        elif isinstance(v, dict):
            for k in v:
                if (id(v), k) not in scanned:
                    missing.append(path + (f"key:{k}",))
                visit(v, k, key, path + (k,))
        elif isinstance(v, list):
            for i in range(len(v)):
                visit(v, i, key, path + (i,))

    for k in body:
        visit(body, k, None, (k,))
    assert not missing, missing


def test_exempt_fields_are_scanned_when_their_value_is_not_the_expected_shape():
    body = {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {
                                         "url": "data:text/plain,jane@example.com", "detail": "jane@example.com"}}]}],
        "tool_choice": "jane@example.com", "reasoning_effort": "low"}
    r = scan_request(CFG, "chat", body)
    assert r.counts["email"] == 3
    part = body["messages"][0]["content"][1]["image_url"]
    assert "jane" not in part["url"] and "jane" not in part["detail"]
    assert body["reasoning_effort"] == "low"
    # base64 image data and the model name are not read as text and never rewritten
    img = {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUtJQUlPU0ZPRE5ON0VYQU1QTEU="}}
    body = {"model": "jane@example.com", "messages": [{"role": "user", "content": [img]}]}
    scan_request(CFG, "chat", body)
    assert body["model"] == "jane@example.com" and body["messages"][0]["content"][0] == img


def test_anthropic_documents_and_plain_text_sources_are_scanned():
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "title": "jane@example.com", "context": "ctx jane@example.com",
         "source": {"type": "text", "media_type": "text/plain", "data": "mail jane@example.com"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "JVBERi0xLjQK"}}]}]}
    r = scan_request(CFG, "anthropic", body)
    assert r.counts["email"] == 3
    doc = body["messages"][0]["content"][0]
    assert "jane" not in orjson.dumps(doc).decode()
    assert body["messages"][0]["content"][1]["source"]["data"] == "JVBERi0xLjQK"



def test_anthropic_text_blocks_are_forwarded_as_blocks_not_joined():
    """Joining blocks for a provider must not change what the model reads (issue 12)."""
    body = {"model": "claude", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "card 4111 1111"},
                                     {"type": "text", "text": "1111 1111"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]}]}
    canonical = to_openai_request(copy.deepcopy(body))
    assert canonical["messages"][0]["content"] == [{"type": "text", "text": "card 4111 1111"},
                                                   {"type": "text", "text": "1111 1111"}]
    assert canonical["messages"][1]["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert canonical["messages"][2]["content"] == [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]
    sent = orjson.loads(ADAPTERS["anthropic"].chat_request(canonical, "m", _provider("anthropic"),
                                                           stream=False).body)
    assert sent["messages"][0]["content"] == body["messages"][0]["content"]
    assert sent["messages"][1]["content"] == body["messages"][1]["content"]
    openai = orjson.loads(ADAPTERS["openai"].chat_request(canonical, "m", _provider("openai"),
                                                          stream=False).body)
    assert openai["messages"][0]["content"] == body["messages"][0]["content"]


def test_anthropic_shape_is_read_from_the_ingress():
    """One description of the Messages request shape (issue 15): the walker's Anthropic
    profile takes its conversation/system fields and reasoning blocks from the ingress."""
    from aigw.ingress import anthropic
    from aigw.redact import fields

    prof = fields.PROFILES["anthropic"]
    assert prof.messages == (anthropic.MESSAGES_FIELD,) and prof.system == (anthropic.SYSTEM_FIELD,)
    assert set(fields._REASONING_EXEMPT) == set(anthropic.REASONING_BLOCKS)  # a new block needs its exemption
    for block, field_name in anthropic.REASONING_BLOCKS.items():
        assert prof.exempt[field_name]("c2lnbmF0dXJl", {"type": block})
        assert not prof.exempt[field_name]("c2lnbmF0dXJl", {"type": "text"})
    assert prof.exempt["source.data"]("aGVsbG8=", {"type": anthropic.BINARY_SOURCE})
    assert not prof.exempt["source.data"]("hello", {"type": "text"})
