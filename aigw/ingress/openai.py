"""Shape checks for canonical OpenAI requests (``/v1/chat/completions``, ``/v1/embeddings``).

Only the shape is checked, enough for the gateway to route and count; value
ranges are left to the provider.  Error messages name the field and never
quote the request's content.
"""
from __future__ import annotations

from typing import Any

from aigw.errors import GatewayError

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_PART_TYPES = {"text", "image_url", "input_audio", "file", "refusal"}


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_content(content: Any, role: str, param: str) -> None:
    if content is None:
        if role in ("assistant",):
            return
        raise _bad(f"{param} is required for role {role}", param)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"{param} must be a string or an array of content parts", param)
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
            raise _bad(f"{p}.type must be one of {sorted(_PART_TYPES)}", f"{p}.type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _bad(f"{p}.text must be a string", f"{p}.text")
        if part["type"] == "image_url":
            img = part.get("image_url")
            if not isinstance(img, dict) or not isinstance(img.get("url"), str):
                raise _bad(f"{p}.image_url.url must be a string", f"{p}.image_url.url")


def _check_message(msg: Any, i: int) -> None:
    param = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise _bad(f"{param} must be an object", param)
    role = msg.get("role")
    if role not in ROLES:
        raise _bad(f"{param}.role must be one of {sorted(ROLES)}", f"{param}.role")
    content = msg.get("content")
    if role == "assistant" and content is None and not msg.get("tool_calls") \
            and not msg.get("function_call"):
        raise _bad(f"{param}.content or tool_calls is required", f"{param}.content")
    _check_content(content, role, f"{param}.content")
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise _bad(f"{param}.tool_call_id must be a string", f"{param}.tool_call_id")
    calls = msg.get("tool_calls")
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list):
            raise _bad(f"{param}.tool_calls must be an array on an assistant message",
                       f"{param}.tool_calls")
        for j, call in enumerate(calls):
            p = f"{param}.tool_calls[{j}]"
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
                    or not isinstance(call.get("id"), str):
                raise _bad(f"{p} needs id and function.name", p)
            if not isinstance(fn.get("arguments", ""), str):
                raise _bad(f"{p}.function.arguments must be a string", f"{p}.function.arguments")


def _check_object_and_model(body: Any) -> None:
    """Both endpoints: a JSON object whose ``model``, when given, is a string."""
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object", "body")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model must be a string", "model")


def validate_chat(body: Any) -> None:
    """Raise GatewayError(400) if ``body`` is not a usable chat completions request."""
    _check_object_and_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty array", "messages")
    for i, msg in enumerate(messages):
        _check_message(msg, i)
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise _bad("stream must be a boolean", "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise _bad("stream_options must be an object", "stream_options")
    n = body.get("n")
    if n is not None and (not _is_int(n) or n < 1):
        raise _bad("n must be a positive integer", "n")
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if v is not None and (not _is_int(v) or v < 1):
            raise _bad(f"{key} must be a positive integer", key)
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        v = body.get(key)
        if v is not None and not _is_num(v):
            raise _bad(f"{key} must be a number", key)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("stop must be a string or an array of strings", "stop")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools must be an array", "tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad(f"tools[{i}].function.name must be a string",
                           f"tools[{i}].function.name")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required") and not (
            isinstance(choice, dict) and isinstance(choice.get("function"), dict)
            and isinstance(choice["function"].get("name"), str)):
        raise _bad("tool_choice must be auto, none, required or a named function",
                   "tool_choice")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or
                            fmt.get("type") not in ("text", "json_object", "json_schema")):
        raise _bad("response_format.type must be text, json_object or json_schema",
                   "response_format")


def validate_embeddings(body: Any) -> None:
    """Raise GatewayError(400) if ``body`` is not a usable embeddings request."""
    _check_object_and_model(body)
    inp = body.get("input")
    ok = (isinstance(inp, str) and inp != "") or (
        isinstance(inp, list) and inp and (
            all(isinstance(x, str) for x in inp)
            or all(_is_int(x) for x in inp)
            or all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in inp)))
    if not ok:
        raise _bad("input must be a non-empty string, array of strings or array of token "
                   "arrays", "input")
    dims = body.get("dimensions")
    if dims is not None and (not _is_int(dims) or dims < 1):
        raise _bad("dimensions must be a positive integer", "dimensions")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad("encoding_format must be float or base64", "encoding_format")
