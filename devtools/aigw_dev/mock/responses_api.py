"""OpenAI Responses API (``POST /v1/responses``), stateless.

The mock keeps no conversations: a request carrying ``previous_response_id``
is refused like an unknown id, so a gateway that leaks its own response ids
upstream (instead of sending the whole conversation) fails its tests.
"""
from __future__ import annotations

from typing import Any

import orjson

from aigw.sse import encode

from .behaviour import (
    CREATED,
    CUT_AFTER,
    THOUGHTS,
    TOOL_ARGS_JSON,
    Counts,
    Faults,
    Prompt,
    Reply,
    chunks,
    count,
    parse_faults,
    plan_reply,
    words,
)
from .openai_api import _text, error
from .wire import Response, Stream, fault_response, stream_for

REASONING_TEXT = "Reasoning it through."


def read_prompt(body: dict[str, Any]) -> Prompt | Response:
    inp = body.get("input")
    items = [{"type": "message", "role": "user", "content": inp}] if isinstance(inp, str) else inp
    if not isinstance(items, list):
        return error(400, "Invalid type for 'input'.", param="input")
    total = words(body.get("instructions") or "")
    msgs = 1 if body.get("instructions") else 0
    last_user, after_tool = "", False
    for i, item in enumerate(items):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            text = _text(item.get("content"))
            total += words(text)
            if item.get("role") == "user" and text:
                last_user = text
            after_tool = False
        elif kind == "function_call_output":
            total += words(str(item.get("output") or ""))
            after_tool = True
        elif kind == "function_call":
            after_tool = False
        elif kind != "reasoning":
            return error(400, f"Invalid value: '{kind}'.", param=f"input[{i}].type")
        msgs += 1
    tools = body.get("tools") or []
    tool = tools[0].get("name") if tools and isinstance(tools[0], dict) else None
    return Prompt(total, msgs, last_user, after_tool, tool)


def _usage(c: Counts) -> dict[str, Any]:
    return {"input_tokens": c.prompt, "input_tokens_details": {"cached_tokens": c.cache_read},
            "output_tokens": c.completion + c.reasoning,
            "output_tokens_details": {"reasoning_tokens": c.reasoning},
            "total_tokens": c.prompt + c.completion + c.reasoning}


def _output(seq: int, reply: Reply, thinking: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if thinking:
        out.append({"type": "reasoning", "id": f"rs_mock{seq:08d}",
                    "summary": [{"type": "summary_text", "text": REASONING_TEXT}]})
    if reply.tool:
        out.append({"type": "function_call", "id": f"fc_mock{seq:08d}", "call_id": f"call_mock{seq:08d}",
                    "name": reply.tool, "arguments": TOOL_ARGS_JSON, "status": "completed"})
    else:
        out.append({"type": "message", "id": f"msg_mock{seq:08d}", "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": reply.text, "annotations": []}]})
    return out


def create(req: Any) -> Response | Stream:
    body = req.body
    if not isinstance(body, dict):
        return error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "Missing required parameter: 'model'.", param="model")
    if body.get("previous_response_id"):
        return error(400, f"Previous response with id '{body['previous_response_id']}' not found.",
                     "previous_response_not_found", param="previous_response_id")
    faults = parse_faults(model)
    failed = fault_response(faults, error)
    if failed:
        return failed
    prompt = read_prompt(body)
    if isinstance(prompt, Response):
        return prompt
    thinking = faults.thinking or bool((body.get("reasoning") or {}).get("effort"))
    reply = plan_reply(prompt)
    counts = count(prompt, reply, faults)
    if thinking and not counts.reasoning:
        counts = Counts(counts.prompt, counts.completion, counts.cache_read, THOUGHTS)
    seq = req.next_id()
    resp: dict[str, Any] = {"id": f"resp_mock{seq:08d}", "object": "response", "created_at": CREATED,
                            "status": "completed", "model": model, "error": None,
                            "incomplete_details": None, "store": body.get("store", True),
                            "output": _output(seq, reply, thinking), "usage": _usage(counts)}
    if faults.no_usage:
        resp["usage"] = None
    if body.get("stream"):
        return _stream(resp, reply, faults)
    return Response(200, orjson.dumps(resp), slow_ms=faults.slow_ms)


def _stream(resp: dict[str, Any], reply: Reply, faults: Faults) -> Stream:
    seq = iter(range(10_000))

    def ev(kind: str, **fields: Any) -> bytes:
        return encode({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    start = {**resp, "status": "in_progress", "output": [], "usage": None}
    events = [ev("response.created", response=start), ev("response.in_progress", response=start)]
    for i, item in enumerate(resp["output"]):
        if item["type"] == "reasoning":
            events.append(ev("response.output_item.added", output_index=i, item={**item, "summary": []}))
            for piece in chunks(REASONING_TEXT):
                events.append(ev("response.reasoning_summary_text.delta", item_id=item["id"],
                                 output_index=i, summary_index=0, delta=piece))
        elif item["type"] == "function_call":
            events.append(ev("response.output_item.added", output_index=i,
                             item={**item, "arguments": "", "status": "in_progress"}))
            for piece in chunks(TOOL_ARGS_JSON):
                events.append(ev("response.function_call_arguments.delta", item_id=item["id"],
                                 output_index=i, delta=piece))
            events.append(ev("response.function_call_arguments.done", item_id=item["id"],
                             output_index=i, arguments=TOOL_ARGS_JSON))
        else:
            events.append(ev("response.output_item.added", output_index=i,
                             item={**item, "content": [], "status": "in_progress"}))
            for piece in chunks(reply.text):
                events.append(ev("response.output_text.delta", item_id=item["id"], output_index=i,
                                 content_index=0, delta=piece))
            events.append(ev("response.output_text.done", item_id=item["id"], output_index=i,
                             content_index=0, text=reply.text))
        events.append(ev("response.output_item.done", output_index=i, item=item))
    events.append(ev("response.completed", response=resp))
    return stream_for(events, faults, cut_at=2 + CUT_AFTER)
