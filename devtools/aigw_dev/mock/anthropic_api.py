"""Anthropic Messages API (``POST /v1/messages``)."""
from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from aigw.errors import ANTHROPIC, error_body
from aigw.sse import encode

from .behaviour import (
    CACHE_WRITE,
    CUT_AFTER,
    TOOL_ARGS,
    TOOL_ARGS_JSON,
    Counts,
    Faults,
    Prompt,
    Reply,
    chunks,
    count,
    limit_reply,
    parse_faults,
    plan_reply,
    string_values,
    words,
)
from .wire import (
    Request,
    Response,
    Stream,
    fault_headers,
    fault_response,
    json_response,
    stream_for,
)


def error(status: int, message: str, type_: str | None = None) -> Response:
    return json_response(status, error_body(ANTHROPIC, status, message, type_=type_),
                         fault_headers(status))


def check_auth(req: Request) -> Response | None:
    """``x-api-key``, or ``Authorization: Bearer`` (what anthropic SDK 2.x sends)."""
    if req.api_key is not None and req.headers.get("x-api-key") != req.api_key \
            and req.headers.get("authorization") != "Bearer " + req.api_key:
        return error(401, "invalid x-api-key", "authentication_error")
    if not req.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    return None


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, dict) and block.get("type") == "text":
        return block.get("text") or ""
    return ""


def _texts(content: Any) -> tuple[str, str]:
    """(text of text blocks, text of tool_result blocks) of one message."""
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        return "", ""
    text, results = [], []
    for b in content:
        if isinstance(b, dict) and b.get("type") == "tool_result":
            inner = b.get("content")
            if isinstance(inner, list):
                results.extend(_block_text(x) for x in inner)
            else:
                results.extend(string_values(inner))
        else:
            text.append(_block_text(b))
    return "\n".join(t for t in text if t), "\n".join(t for t in results if t)


def read_prompt(body: dict[str, Any]) -> Prompt:
    system = body.get("system")
    system_text = system if isinstance(system, str) else "\n".join(
        _block_text(b) for b in system or [])
    total, count_msgs, last_user = words(system_text), 1 if system_text else 0, ""
    after_tool = False
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        text, results = _texts(m.get("content"))
        total += words(text) + words(results)
        count_msgs += 1
        if m.get("role") == "user" and text:
            last_user = text
        after_tool = bool(results) and m.get("role") == "user"
    tools = body.get("tools") or []
    tool = tools[0].get("name") if tools and isinstance(tools[0], dict) else None
    return Prompt(total, count_msgs, last_user, after_tool, tool)


def usage(c: Counts, faults: Faults, output_tokens: int) -> dict[str, int]:
    """Anthropic counts: input_tokens excludes cache reads and writes."""
    return {"input_tokens": c.prompt - c.cache_read,
            "cache_creation_input_tokens": CACHE_WRITE if faults.cached else 0,
            "cache_read_input_tokens": c.cache_read,
            "output_tokens": output_tokens}


THINKING_TEXT = "Let me think about it."
SIGNATURE_PREFIX = "sig-mock-"


def _has_cache_control(body: dict[str, Any]) -> bool:
    """Any ``cache_control`` breakpoint in system, tools or message blocks."""
    def blocks(value: Any) -> list:
        return value if isinstance(value, list) else []
    items = blocks(body.get("system")) + blocks(body.get("tools"))
    for m in blocks(body.get("messages")):
        if isinstance(m, dict):
            items += blocks(m.get("content"))
    return any(isinstance(b, dict) and isinstance(b.get("cache_control"), dict) for b in items)


def _thinking_check(body: dict[str, Any]) -> Response | None:
    """What Anthropic checks of extended thinking: earlier thinking blocks must come
    back with the signature the API gave them, and with thinking on, an assistant turn
    that used a tool must start with its thinking block."""
    enabled = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
    for i, m in enumerate(body.get("messages") or []):
        if not isinstance(m, dict) or m.get("role") != "assistant" or not isinstance(m.get("content"), list):
            continue
        kinds = [b.get("type") for b in m["content"] if isinstance(b, dict)]
        for b in m["content"]:
            if isinstance(b, dict) and b.get("type") == "thinking" and \
                    not str(b.get("signature") or "").startswith(SIGNATURE_PREFIX):
                return error(400, f"messages.{i}.content: invalid signature in thinking block")
            if isinstance(b, dict) and b.get("type") == "redacted_thinking" and not b.get("data"):
                return error(400, f"messages.{i}.content: redacted_thinking needs data")
        if enabled and "tool_use" in kinds and kinds[0] not in ("thinking", "redacted_thinking"):
            return error(400, f"messages.{i}.content.0.type: Expected `thinking` or "
                              "`redacted_thinking`, but found `tool_use`.")
    return None


def count_tokens(req: Request) -> Response:
    """``POST /v1/messages/count_tokens``: the mock's exact count of the prompt."""
    body = req.body
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) \
            or not isinstance(body.get("model"), str):
        return error(400, "model and messages: Field required")
    if "max_tokens" in body or "stream" in body:
        return error(400, "max_tokens: Extra inputs are not permitted")
    failed = fault_response(parse_faults(body["model"]), error)
    if failed:
        return failed
    return json_response(200, {"input_tokens": read_prompt(body).tokens})


def chat(req: Request) -> Response | Stream:
    body = req.body
    if not isinstance(body, dict):
        return error(400, "There was an issue with the JSON body of your request.")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return error(400, f"{name}: Field required")
    model = body["model"]
    if not isinstance(model, str) or not isinstance(body["messages"], list):
        return error(400, "model: expected a string; messages: expected a list")
    faults = parse_faults(model)
    failed = fault_response(faults, error)
    if failed:
        return failed
    bad_thinking = _thinking_check(body)
    if bad_thinking:
        return bad_thinking
    if _has_cache_control(body) and not faults.cached:
        faults = dataclasses.replace(faults, cached=True)
    thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
    prompt = read_prompt(body)
    reply = plan_reply(prompt)
    reply, cut = limit_reply(reply, body.get("max_tokens"), faults)
    stop = "tool_use" if reply.tool else ("max_tokens" if cut else "end_turn")
    counts = count(prompt, reply, faults)
    seq = req.next_id()
    mid, tid = f"msg_mock{seq:08d}", f"toolu_mock{seq:08d}"
    if body.get("stream"):
        return _stream(mid, tid, model, reply, counts, faults, stop, seq if thinking else None)
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": THINKING_TEXT,
                        "signature": f"{SIGNATURE_PREFIX}{seq}"})
    if reply.tool:
        content.append({"type": "tool_use", "id": tid, "name": reply.tool, "input": TOOL_ARGS})
    else:
        content.append({"type": "text", "text": reply.text})
    out: dict[str, Any] = {
        "id": mid, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop,
        "stop_sequence": None,
    }
    if not faults.no_usage:
        out["usage"] = usage(counts, faults, counts.completion)
    return Response(200, orjson.dumps(out), slow_ms=faults.slow_ms)


def _stream(mid: str, tid: str, model: str, reply: Reply, counts: Counts,
            faults: Faults, stop: str, thinking_seq: int | None = None) -> Stream:
    def ev(obj: dict[str, Any]) -> bytes:
        return encode(obj, obj["type"])

    message: dict[str, Any] = {"id": mid, "type": "message", "role": "assistant",
                               "model": model, "content": [], "stop_reason": None,
                               "stop_sequence": None}
    if not faults.no_usage:
        message["usage"] = usage(counts, faults, 1)
    if reply.tool:
        block: dict[str, Any] = {"type": "tool_use", "id": tid, "name": reply.tool,
                                 "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p}
                  for p in chunks(TOOL_ARGS_JSON)]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in chunks(reply.text)]
    events = [ev({"type": "message_start", "message": message})]
    i = 0
    if thinking_seq is not None:  # a signed thinking block first, as Anthropic streams it
        events += [ev({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                   ev({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "thinking_delta", "thinking": THINKING_TEXT}}),
                   ev({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "signature_delta",
                                 "signature": f"{SIGNATURE_PREFIX}{thinking_seq}"}}),
                   ev({"type": "content_block_stop", "index": 0})]
        i = 1
    events += [ev({"type": "content_block_start", "index": i, "content_block": block}),
               ev({"type": "ping"})]
    events += [ev({"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
    delta: dict[str, Any] = {"type": "message_delta",
                             "delta": {"stop_reason": stop,
                                       "stop_sequence": None}}
    if not faults.no_usage:
        delta["usage"] = {"output_tokens": counts.completion}
    events += [ev({"type": "content_block_stop", "index": i}), ev(delta),
               ev({"type": "message_stop"})]
    return stream_for(events, faults, cut_at=3 + CUT_AFTER)
