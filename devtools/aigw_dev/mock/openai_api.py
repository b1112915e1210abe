"""OpenAI Chat Completions / Embeddings / Models (also Mistral, Azure, compatible)."""
from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from aigw.errors import OPENAI, error_body
from aigw.sse import DONE, encode
from aigw.types import Usage

from .behaviour import (
    CREATED,
    CUT_AFTER,
    TOOL_ARGS_JSON,
    Counts,
    Faults,
    Prompt,
    Reply,
    chunks,
    count,
    embedding,
    limit_reply,
    parse_faults,
    plan_reply,
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

MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "mock-model")


def error(status: int, message: str, code: str | None = None,
          type_: str | None = None, param: str | None = None) -> Response:
    return json_response(status, error_body(OPENAI, status, message, code, param, type_),
                         fault_headers(status))


def check_auth(req: Request, azure: bool = False) -> Response | None:
    """Bearer key (OpenAI) or ``api-key`` header (Azure)."""
    if req.api_key is None:
        return None
    if azure:
        if req.headers.get("api-key") == req.api_key:
            return None
        return json_response(401, {"error": {
            "code": "401", "message": "Access denied due to invalid subscription key or "
            "wrong API endpoint. Make sure to provide a valid key for an active subscription "
            "and use a correct regional API endpoint for your resource."}})
    if req.headers.get("authorization") == "Bearer " + req.api_key:
        return None
    return error(401, "Incorrect API key provided.", "invalid_api_key",
                 "invalid_request_error")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def read_prompt(body: dict[str, Any]) -> Prompt:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    total, last_user = 0, ""
    for m in messages:
        text = _text(m.get("content"))
        total += words(text)
        if m.get("role") == "user" and text:
            last_user = text
    tools = body.get("tools") or []
    tool = None
    if tools and isinstance(tools[0], dict):
        tool = (tools[0].get("function") or {}).get("name")
    after_tool = bool(messages) and messages[-1].get("role") in ("tool", "function")
    return Prompt(total, len(messages), last_user, after_tool, tool)


def usage(c: Counts) -> dict[str, Any]:
    return Usage(input_tokens=c.prompt, output_tokens=c.completion + c.reasoning,
                 cache_read_tokens=c.cache_read, reasoning_tokens=c.reasoning).to_openai()


def _message(reply: Reply, call_id: str) -> dict[str, Any]:
    if reply.tool:
        return {"role": "assistant", "content": None, "refusal": None, "annotations": [],
                "tool_calls": [{"id": call_id, "type": "function",
                                "function": {"name": reply.tool,
                                             "arguments": TOOL_ARGS_JSON}}]}
    return {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}


def _invalid(body: Any) -> Response | None:
    if not isinstance(body, dict):
        return error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return error(400, "Missing required parameter: 'messages'.", "missing_required_parameter",
                     param="messages")
    return None


def chat(req: Request, deployment: str | None = None) -> Response | Stream:
    """``POST /v1/chat/completions``; ``deployment`` set for Azure (it plays the model)."""
    body = req.body
    bad = _invalid(body)
    if bad:
        return bad
    model = deployment or body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "Missing required parameter: 'model'.", "missing_required_parameter",
                     param="model")
    faults = parse_faults(model)
    if faults.drop:
        return Response(0, b"", drop=True, slow_ms=faults.slow_ms)
    if faults.invalid_500:
        return error(500, "Invalid 'messages': the prompt could not be parsed.",
                     type_="invalid_request_error")
    failed = fault_response(faults, error)
    if failed:
        return failed
    prompt = read_prompt(body)
    reply = plan_reply(prompt)
    reply, cut = limit_reply(reply, body.get("max_completion_tokens") or body.get("max_tokens"), faults)
    finish = "tool_calls" if reply.tool else ("length" if cut else "stop")
    n = body.get("n") or 1
    n = n if isinstance(n, int) and 1 <= n <= 16 else 1
    counts = count(prompt, reply, faults, n)
    seq = req.next_id()
    cid, call_id = f"chatcmpl-mock{seq:08d}", f"call_mock{seq:08d}"
    if body.get("stream"):
        opts = body.get("stream_options") or {}
        with_usage = bool(opts.get("include_usage")) and not faults.no_usage
        return _stream(cid, call_id, model, reply, counts, n, with_usage, faults, finish)
    out: dict[str, Any] = {
        "id": cid, "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": i, "message": _message(reply, call_id), "logprobs": None,
                     "finish_reason": finish}
                    for i in range(n)],
        "system_fingerprint": "fp_mock", "service_tier": "default",
    }
    if not faults.no_usage:
        out["usage"] = usage(counts)
    return Response(200, orjson.dumps(out), slow_ms=faults.slow_ms)


def _stream(cid: str, call_id: str, model: str, reply: Reply, counts: Counts, n: int,
            with_usage: bool, faults: Faults, finish: str) -> Stream:
    head = {"id": cid, "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": "fp_mock"}
    if with_usage:
        head["usage"] = None

    def chunk(deltas: list[dict[str, Any]], finish: str | None = None) -> bytes:
        choices = [{"index": i, "delta": d, "logprobs": None, "finish_reason": finish}
                   for i, d in enumerate(deltas)]
        return encode({**head, "choices": choices})

    events = [chunk([{"role": "assistant", "content": None if reply.tool else "",
                      "refusal": None}] * n)]
    if faults.empty:
        return stream_for([DONE], faults, cut_at=1)
    if faults.early_done:
        return stream_for(events + [DONE], faults, cut_at=1)
    if faults.stream_error:
        # llama.cpp server: an error after the 200 headers is sent as an "error:" SSE line
        err = {"code": faults.stream_error, "type": "exceed_context_size_error",
               "message": "the request exceeds the available context size, try increasing it"}
        return stream_for([b"error: " + orjson.dumps(err) + b"\n\n"], faults, cut_at=1)
    if reply.tool:
        events.append(chunk([{"tool_calls": [{
            "index": 0, "id": call_id, "type": "function",
            "function": {"name": reply.tool, "arguments": ""}}]}] * n))
        for piece in chunks(TOOL_ARGS_JSON):
            events.append(chunk([{"tool_calls": [{
                "index": 0, "function": {"arguments": piece}}]}] * n))
    else:
        for piece in chunks(reply.text):
            events.append(chunk([{"content": piece}] * n))
    events.append(chunk([{}] * n, finish))
    if with_usage:
        events.append(encode({**head, "choices": [], "usage": usage(counts)}))
    events.append(DONE)
    return stream_for(events, faults, cut_at=1 + CUT_AFTER)


def _inputs(value: Any) -> list[str] | None:
    """Embedding input: a string, a list of strings, or token id list(s)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    return None


def embeddings(req: Request, deployment: str | None = None) -> Response:
    body = req.body
    if not isinstance(body, dict):
        return error(400, "We could not parse the JSON body of your request.")
    model = deployment or body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "Missing required parameter: 'model'.", param="model")
    inputs = _inputs(body.get("input"))
    if inputs is None:
        return error(400, "'input' must be a string or a non-empty array.", param="input")
    faults = parse_faults(model)
    failed = fault_response(faults, error)
    if failed:
        return failed
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(inputs):
        vec: Any = embedding(text)
        if as_b64:
            vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(words(t) for t in inputs)
    out = {"object": "list", "data": data, "model": model,
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return Response(200, orjson.dumps(out), slow_ms=faults.slow_ms)


def models(req: Request) -> Response:
    return json_response(200, {"object": "list", "data": [
        {"id": m, "object": "model", "created": CREATED, "owned_by": "aigw-mock"}
        for m in MODELS]})
