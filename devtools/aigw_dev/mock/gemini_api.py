"""Gemini ``generateContent`` / ``streamGenerateContent``."""
from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from aigw.sse import encode

from .behaviour import (
    CUT_AFTER,
    TOOL_ARGS,
    Counts,
    Faults,
    Prompt,
    Reply,
    chunks,
    count,
    parse_faults,
    plan_reply,
    string_values,
    words,
)
from .wire import (
    JSON,
    Request,
    Response,
    Stream,
    fault_headers,
    fault_response,
    json_response,
    stream_for,
)

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def error(status: int, message: str) -> Response:
    return json_response(status, {"error": {
        "code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}},
        fault_headers(status))


def check_auth(req: Request) -> Response | None:
    """Like Gemini: no key → 403, wrong key → 400 ``API key not valid``."""
    if req.api_key is None:
        return None
    key = req.headers.get("x-goog-api-key") or req.query.get("key")
    if key == req.api_key:
        return None
    if not key:
        return error(403, "Method doesn't allow unregistered callers (callers without "
                          "established identity). Please use API Key or other form of API "
                          "consumer identity to call this API.")
    return error(400, "API key not valid. Please pass a valid API key.")


def _part_text(part: dict[str, Any]) -> tuple[str, str]:
    """(plain text, function response text) of one part."""
    if isinstance(part.get("text"), str) and not part.get("thought"):
        return part["text"], ""
    fr = part.get("functionResponse") or part.get("function_response")
    if isinstance(fr, dict):
        return "", "\n".join(string_values(fr.get("response")))
    return "", ""


def read_prompt(body: dict[str, Any]) -> Prompt:
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    sys_parts = system.get("parts") if isinstance(system, dict) else None
    sys_text = "\n".join(_part_text(p)[0] for p in sys_parts or [] if isinstance(p, dict))
    total, msgs, last_user, after_tool = words(sys_text), 1 if sys_text else 0, "", False
    for c in body.get("contents") or []:
        if not isinstance(c, dict):
            continue
        texts, results = [], []
        for p in c.get("parts") or []:
            if isinstance(p, dict):
                t, r = _part_text(p)
                texts.append(t)
                results.append(r)
        text = "\n".join(t for t in texts if t)
        result = "\n".join(r for r in results if r)
        total += words(text) + words(result)
        msgs += 1
        if c.get("role", "user") in ("user", "function") and text:
            last_user = text
        after_tool = bool(result)
    tool = None
    for t in body.get("tools") or []:
        decls = (t.get("functionDeclarations") or t.get("function_declarations")
                 if isinstance(t, dict) else None)
        if decls:
            tool = decls[0].get("name")
            break
    return Prompt(total, msgs, last_user, after_tool, tool)


def usage(c: Counts, faults: Faults) -> dict[str, int]:
    out = {"promptTokenCount": c.prompt, "candidatesTokenCount": c.completion,
           "totalTokenCount": c.prompt + c.completion + c.reasoning}
    if faults.cached:
        out["cachedContentTokenCount"] = c.cache_read
    if faults.thinking:
        out["thoughtsTokenCount"] = c.reasoning
    return out


def _candidate(parts: list[dict[str, Any]], finish: bool) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        cand["finishReason"] = "STOP"
    return cand


def generate(req: Request, model: str, stream: bool) -> Response | Stream:
    body = req.body
    if not isinstance(body, dict):
        return error(400, "Invalid JSON payload received.")
    if not isinstance(body.get("contents"), list) or not body["contents"]:
        return error(400, "* GenerateContentRequest.contents: contents is not specified")
    faults = parse_faults(model)
    failed = fault_response(faults, error)
    if failed:
        return failed
    thinking = ((body.get("generationConfig") or {}).get("thinkingConfig") or {}).get("includeThoughts")
    if thinking and not faults.thinking:
        faults = dataclasses.replace(faults, thinking=True)
    prompt = read_prompt(body)
    reply = plan_reply(prompt)
    counts = count(prompt, reply, faults)
    rid = f"mock{req.next_id():08d}"
    if stream:
        return _stream(rid, model, reply, counts, faults, req.query.get("alt") == "sse", bool(thinking))
    out: dict[str, Any] = {"candidates": [_candidate(_thought(thinking) + _parts(reply), True)],
                           "modelVersion": model, "responseId": rid}
    if not faults.no_usage:
        out["usageMetadata"] = usage(counts, faults)
    return Response(200, orjson.dumps(out), slow_ms=faults.slow_ms)


THOUGHT_TEXT = "Thinking it over."


def _thought(include: Any) -> list[dict[str, Any]]:
    """A thought-summary part (sent only when the request set includeThoughts)."""
    return [{"text": THOUGHT_TEXT, "thought": True}] if include else []


def _parts(reply: Reply) -> list[dict[str, Any]]:
    if reply.tool:
        return [{"functionCall": {"name": reply.tool, "args": TOOL_ARGS}}]
    return [{"text": reply.text}]


def _stream(rid: str, model: str, reply: Reply, counts: Counts, faults: Faults,
            sse: bool, thinking: bool = False) -> Stream:
    pieces = [[p] for p in _parts(reply)] if reply.tool else [
        [{"text": t}] for t in chunks(reply.text)]
    if thinking:
        pieces.insert(0, _thought(True))
    objs = []
    for i, parts in enumerate(pieces):
        last = i == len(pieces) - 1
        obj: dict[str, Any] = {"candidates": [_candidate(parts, last)]}
        if not faults.no_usage:
            obj["usageMetadata"] = usage(counts, faults) if last else {
                "promptTokenCount": counts.prompt, "totalTokenCount": counts.prompt}
        obj.update(modelVersion=model, responseId=rid)
        objs.append(obj)
    if sse:
        events = [encode(o) for o in objs]
        return stream_for(events, faults, cut_at=CUT_AFTER)
    # without alt=sse Gemini streams one JSON array, element by element
    events = [(b"[" if i == 0 else b",\r\n") + orjson.dumps(o) for i, o in enumerate(objs)]
    events.append(b"]")
    return stream_for(events, faults, cut_at=CUT_AFTER, content_type=JSON)
