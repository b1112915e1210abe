"""Shape checks for canonical OpenAI requests (``/v1/chat/completions``, ``/v1/embeddings``).

Only the shape is checked, enough for the gateway to route and count; value
ranges are left to the provider.  Error messages name the field and never
quote the request's content.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeGuard

from aigw.errors import GatewayError

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_PART_TYPES = {"text", "image_url", "input_audio", "file", "refusal"}
# OpenAI's own limit ("array too long. Expected an array with maximum length 2048"); it also
# bounds the per-message work of every plugin (redaction scan, token count) on huge bodies
MAX_MESSAGES = 2048


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _in(v: Any, allowed: Collection[str]) -> TypeGuard[str]:
    """``v in allowed`` for any JSON value (a list or object is unhashable, never allowed)."""
    return isinstance(v, str) and v in allowed


def _opt(body: dict[str, Any], key: str, kind: type | tuple[Any, ...], what: str,
         param: str | None = None) -> None:
    v = body.get(key)
    if v is not None and (not isinstance(v, kind) or (isinstance(v, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,)))):
        raise _bad(f"{param or key} must be {what}", param or key)


def _check_function(fn: Any, p: str) -> None:
    """A function definition (``tools[i].function`` or legacy ``functions[i]``)."""
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise _bad(f"{p}.name must be a non-empty string", f"{p}.name")
    _opt(fn, "description", str, "a string", f"{p}.description")
    _opt(fn, "parameters", dict, "a JSON Schema object", f"{p}.parameters")
    _opt(fn, "strict", bool, "a boolean", f"{p}.strict")


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
        if not isinstance(part, dict) or not _in(part.get("type"), _PART_TYPES):
            raise _bad(f"{p}.type must be one of {sorted(_PART_TYPES)}", f"{p}.type")
        kind = part["type"]
        if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
            raise _bad(f"{p}.{kind} must be a string", f"{p}.{kind}")
        if kind == "image_url":
            img = part.get("image_url")
            if not isinstance(img, dict) or not isinstance(img.get("url"), str):
                raise _bad(f"{p}.image_url.url must be a string", f"{p}.image_url.url")
            _opt(img, "detail", str, "a string", f"{p}.image_url.detail")
        if kind in ("input_audio", "file") and not isinstance(part.get(kind), dict):
            raise _bad(f"{p}.{kind} must be an object", f"{p}.{kind}")


def _check_message(msg: Any, i: int) -> None:
    param = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise _bad(f"{param} must be an object", param)
    role = msg.get("role")
    if not _in(role, ROLES):
        raise _bad(f"{param}.role must be one of {sorted(ROLES)}", f"{param}.role")
    content = msg.get("content")
    if role == "assistant" and content is None and not msg.get("tool_calls") \
            and not msg.get("function_call"):
        raise _bad(f"{param}.content or tool_calls is required", f"{param}.content")
    _check_content(content, role, f"{param}.content")
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise _bad(f"{param}.tool_call_id must be a string", f"{param}.tool_call_id")
    _opt(msg, "name", str, "a string", f"{param}.name")
    _opt(msg, "refusal", str, "a string", f"{param}.refusal")
    fc = msg.get("function_call")
    if fc is not None and (not isinstance(fc, dict) or not isinstance(fc.get("name"), str)
                           or not isinstance(fc.get("arguments", ""), str)):
        raise _bad(f"{param}.function_call needs a string name and string arguments",
                   f"{param}.function_call")
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
            if call.get("type", "function") != "function":
                raise _bad(f"{p}.type must be function", f"{p}.type")
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
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"messages is too long: at most {MAX_MESSAGES} messages per request", "messages")
    for i, msg in enumerate(messages):
        _check_message(msg, i)
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise _bad("stream must be a boolean", "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise _bad("stream_options must be an object", "stream_options")
    if opts:
        _opt(opts, "include_usage", bool, "a boolean", "stream_options.include_usage")
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
            if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                raise _bad(f"tools[{i}].type must be function", f"tools[{i}].type")
            _check_function(tool.get("function"), f"tools[{i}].function")
    functions = body.get("functions")
    if functions is not None:
        if not isinstance(functions, list):
            raise _bad("functions must be an array", "functions")
        for i, fn in enumerate(functions):
            _check_function(fn, f"functions[{i}]")
    fcall = body.get("function_call")
    if fcall is not None and not _in(fcall, ("auto", "none")) and not (
            isinstance(fcall, dict) and isinstance(fcall.get("name"), str)):
        raise _bad("function_call must be auto, none or a named function", "function_call")
    for key, kind, what in (("user", str, "a string"), ("metadata", dict, "an object"),
                            ("logit_bias", dict, "an object"), ("seed", int, "an integer"),
                            ("parallel_tool_calls", bool, "a boolean"), ("store", bool, "a boolean"),
                            ("logprobs", bool, "a boolean"), ("top_logprobs", int, "an integer"),
                            ("reasoning_effort", str, "a string"), ("service_tier", str, "a string"),
                            ("modalities", list, "an array"), ("audio", dict, "an object"),
                            ("prediction", dict, "an object")):
        _opt(body, key, kind, what)
    choice = body.get("tool_choice")
    if choice is not None and not _in(choice, ("auto", "none", "required")) and not (
            isinstance(choice, dict) and isinstance(choice.get("function"), dict)
            and isinstance(choice["function"].get("name"), str)):
        raise _bad("tool_choice must be auto, none, required or a named function",
                   "tool_choice")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or
                            not _in(fmt.get("type"), ("text", "json_object", "json_schema"))):
        raise _bad("response_format.type must be text, json_object or json_schema",
                   "response_format")
    if fmt is not None and fmt["type"] == "json_schema":
        js = fmt.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("name"), str):
            raise _bad("response_format.json_schema needs a name", "response_format.json_schema")
        _opt(js, "schema", dict, "an object", "response_format.json_schema.schema")


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
    if fmt is not None and not _in(fmt, ("float", "base64")):
        raise _bad("encoding_format must be float or base64", "encoding_format")
    _opt(body, "user", str, "a string")
