"""OpenAI Responses API on the client side (``POST /v1/responses``).

``to_chat`` turns a Responses request (plus the conversation kept for its
``previous_response_id``) into the canonical chat request every provider
adapter takes; ``build_response`` and ``StreamEncoder`` turn the canonical
answer back into a Response object / the typed Responses SSE events
(``response.created`` ... ``response.completed``), whatever provider served it.

What is translated (everything else the API defines is refused with a 400
naming the field, never silently dropped):

* ``instructions`` -> a system message (not carried to the next turn, as in
  OpenAI's API);
* ``input``: a string, or items: messages (``input_text``, ``output_text``,
  ``input_image``, ``refusal`` parts), ``function_call``,
  ``function_call_output``, ``reasoning`` (kept only as context-free items:
  dropped for providers that cannot take them back);
* ``tools`` of type ``function``, ``tool_choice``, ``parallel_tool_calls``,
  ``max_output_tokens``, ``temperature``, ``top_p``, ``text.format``
  (``json_schema`` / ``json_object``), ``reasoning.effort``, ``user``,
  ``stream``, ``store``, ``previous_response_id``, ``metadata``.
"""
from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from typing import Any

from aigw.errors import GatewayError
from aigw.sse import encode
from aigw.types import Usage

_MESSAGE_ROLES = {"user", "assistant", "system", "developer"}


def _bad(message: str, param: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code=code, param=param)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


# -- request ------------------------------------------------------------------

def _message_content(content: Any, role: str, param: str) -> str | list[dict[str, Any]] | None:
    """Responses content (string or parts) -> chat content (string or parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{param} must be a string or an array of content parts", param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "refusal"):
            key = "refusal" if kind == "refusal" else "text"
            if not isinstance(part.get(key), str):
                raise _bad(f"{p}.{key} must be a string", f"{p}.{key}")
            parts.append({"type": "text", "text": part[key]})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _bad(f"{p}.image_url must be a URL or a data URL (file_id is not "
                           "supported by this gateway)", f"{p}.image_url")
            img: dict[str, Any] = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                img["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": img})
        else:
            raise _bad(f"{p}.type {kind!r} is not supported by this gateway", f"{p}.type")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    if role != "user":
        raise _bad(f"{param}: images are only accepted in user messages", param)
    return parts


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text") \
                    or not isinstance(part.get("text"), str):
                raise _bad(f"{param}[{j}] must be an input_text part", f"{param}[{j}]")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"{param} must be a string or an array of input_text parts", param)


def input_messages(inp: Any) -> list[dict[str, Any]]:
    """The ``input`` of a Responses request -> canonical chat messages."""
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    if not isinstance(inp, list):
        raise _bad("input must be a string or an array of input items", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(inp):
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{p} must be an object", p)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _MESSAGE_ROLES:
                raise _bad(f"{p}.role must be one of {sorted(_MESSAGE_ROLES)}", f"{p}.role")
            content = _message_content(item.get("content"), role, f"{p}.content")
            out.append({"role": role, "content": content})
        elif kind == "function_call":
            for key in ("call_id", "name"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise _bad(f"{p}.{key} must be a non-empty string", f"{p}.{key}")
            args = item.get("arguments", "")
            if not isinstance(args, str):
                raise _bad(f"{p}.arguments must be a string", f"{p}.arguments")
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": args or "{}"}}
            prev = out[-1] if out else None
            if prev is not None and prev.get("role") == "assistant" and "tool_calls" in prev:
                prev["tool_calls"].append(call)
            elif prev is not None and prev.get("role") == "assistant":
                prev["tool_calls"] = [call]
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str) or not item["call_id"]:
                raise _bad(f"{p}.call_id must be a non-empty string", f"{p}.call_id")
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": _tool_output(item.get("output"), f"{p}.output")})
        elif kind == "reasoning":
            continue  # provider-private reasoning: not replayed through the canonical chat shape
        else:
            raise _bad(f"{p}.type {kind!r} is not supported by this gateway", f"{p}.type")
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools must be an array", "tools")
    out = []
    for i, tool in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(f"{p} must be an object", p)
        if tool.get("type") != "function":
            raise _bad(f"{p}.type {tool.get('type')!r} is not supported by this gateway; only "
                       "function tools are", f"{p}.type", code="not_supported")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"{p}.name must be a non-empty string", f"{p}.name")
        fn: dict[str, Any] = {"name": tool["name"],
                              "parameters": tool.get("parameters") or {"type": "object",
                                                                       "properties": {}}}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice must be auto, none, required or {type: function, name}",
               "tool_choice")


def _text_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise _bad("text must be an object", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("text.format must be an object", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format json_schema needs name and schema", "text.format")
        js: dict[str, Any] = {"name": fmt["name"], "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            js["strict"] = fmt["strict"]
        if isinstance(fmt.get("description"), str):
            js["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": js}
    raise _bad("text.format.type must be text, json_object or json_schema", "text.format.type")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_request(body: Any) -> None:
    """The shape checks that do not need the stored conversation."""
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object", "body")
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise _bad("model must be a string", "model")
    if "input" not in body and not body.get("previous_response_id"):
        raise _bad("input is required", "input")
    for key in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise _bad(f"{key} must be a boolean", key)
    if body.get("background"):
        raise _bad("background responses are not supported by this gateway", "background",
                   code="not_supported")
    if body.get("conversation") is not None or body.get("prompt") is not None:
        key = "conversation" if body.get("conversation") is not None else "prompt"
        raise _bad(f"{key} is not supported by this gateway; use previous_response_id", key,
                   code="not_supported")
    prev = body.get("previous_response_id")
    if prev is not None and (not isinstance(prev, str) or not prev):
        raise _bad("previous_response_id must be a string", "previous_response_id")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise _bad("instructions must be a string", "instructions")
    mot = body.get("max_output_tokens")
    if mot is not None and (not _is_int(mot) or mot < 1):
        raise _bad("max_output_tokens must be a positive integer", "max_output_tokens")
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise _bad("metadata must be an object", "metadata")


def to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None = None
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Responses request -> (canonical chat request, the turn's conversation messages).

    ``history`` is the conversation of ``previous_response_id`` (canonical
    messages, without instructions); the second value is history + this
    turn's input, the part kept for the next turn.
    """
    check_request(body)
    turn = list(copy.deepcopy(history or []))
    if "input" in body:
        turn += input_messages(body["input"])
    if not turn:
        raise _bad("input must not be empty", "input")
    messages = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages += copy.deepcopy(turn)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        v = body.get(key)
        if v is not None:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise _bad(f"{key} must be a number", key)
            out[key] = v
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is False:
            out["parallel_tool_calls"] = False
    elif body.get("tool_choice") not in (None, "auto", "none"):
        raise _bad("tool_choice needs tools", "tool_choice")
    if body.get("text") is not None:
        fmt = _text_format(body["text"])
        if fmt is not None:
            out["response_format"] = fmt
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _bad("reasoning must be an object", "reasoning")
        if reasoning.get("effort") is not None:
            if reasoning["effort"] not in ("minimal", "low", "medium", "high", "none"):
                raise _bad("reasoning.effort must be minimal, low, medium or high",
                           "reasoning.effort")
            out["reasoning_effort"] = reasoning["effort"]
    if isinstance(body.get("user"), str):
        out["user"] = body["user"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, turn


# -- response -----------------------------------------------------------------

def response_usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {"input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.total_tokens}


class Shell:
    """The request-echo fields of a Response object (what OpenAI sends back)."""

    def __init__(self, body: dict[str, Any], model: str, response_id: str | None = None):
        self.id = response_id or new_id("resp_")
        self.created_at = int(time.time())
        self.model = model
        self.fields: dict[str, Any] = {
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "user": body.get("user"),
        }

    def response(self, status: str, output: list[dict[str, Any]], usage: Usage | None,
                 incomplete: str | None = None,
                 error: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "response", "created_at": self.created_at,
                "status": status, "background": False, "error": error,
                "incomplete_details": {"reason": incomplete} if incomplete else None,
                "model": self.model, "output": output, **self.fields,
                "usage": response_usage(usage) if usage is not None else None}


def _incomplete(finish: str | None) -> str | None:
    if finish == "length":
        return "max_output_tokens"
    if finish == "content_filter":
        return "content_filter"
    return None


def _message_item(text: str, status: str = "completed",
                  item_id: str | None = None) -> dict[str, Any]:
    return {"type": "message", "id": item_id or new_id("msg_"), "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(call_id: str, name: str, arguments: str, status: str = "completed",
               item_id: str | None = None) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id or new_id("fc_"), "call_id": call_id,
            "name": name, "arguments": arguments, "status": status}


def _reasoning_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id or new_id("rs_"),
            "summary": [{"type": "summary_text", "text": text}]}


def build_response(resp: dict[str, Any], shell: Shell, usage: Usage | None) -> dict[str, Any]:
    """Canonical chat.completion (already restored) -> Response object."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(_reasoning_item(reasoning))
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        output.append(_message_item(text))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(_call_item(call.get("id") or new_id("call_"), fn.get("name") or "",
                                 fn.get("arguments") or ""))
    reason = _incomplete(choice.get("finish_reason"))
    return shell.response("incomplete" if reason else "completed", output, usage, reason)


def output_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Response's output items -> the canonical assistant message kept for the next turn."""
    text = "".join(part.get("text", "") for item in output if item.get("type") == "message"
                   for part in item.get("content") or () if part.get("type") == "output_text")
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
             for item in output if item.get("type") == "function_call"]
    if not text and not calls:
        return []
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    return [msg]


class StreamEncoder:
    """Canonical chunks -> typed Responses SSE events, incrementally.

    Only choice 0 is translated.  Output items are opened in the order their
    first delta arrives (reasoning, message text, then one item per tool
    call) and all are closed at the end, before ``response.completed``, which
    carries the final usage (or ``response.incomplete`` when the output was
    cut at ``max_output_tokens``).  ``on_done`` gets the final Response.
    """

    def __init__(self, shell: Shell,
                 on_done: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.shell = shell
        self.on_done = on_done
        self._seq = 0
        self._started = False
        self._closed = False
        self._items: list[dict[str, Any]] = []        # output items, in order
        self._text_item: int | None = None  # output index of the open message item
        self._reason_item: int | None = None
        self._tools: dict[int, int] = {}    # canonical tool index -> output index
        self._finish: str | None = None

    def _ev(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return encode(data, event=kind)

    def _start(self) -> list[bytes]:
        self._started = True
        resp = self.shell.response("in_progress", [], None)
        return [self._ev("response.created", response=resp),
                self._ev("response.in_progress", response=resp)]

    def _add(self, item: dict[str, Any]) -> tuple[int, list[bytes]]:
        idx = len(self._items)
        self._items.append(item)
        return idx, [self._ev("response.output_item.added", output_index=idx, item=copy.deepcopy(item))]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if self._closed:
            return out
        if not self._started:
            out += self._start()
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                out += self._reasoning(reasoning)
            text = delta.get("content")
            if isinstance(text, str) and text:
                out += self._text(text)
            for call in delta.get("tool_calls") or []:
                out += self._tool(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _reasoning(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._reason_item is None:
            item: dict[str, Any] = {"type": "reasoning", "id": new_id("rs_"), "summary": []}
            self._reason_item, out = self._add(item)
            item["summary"].append({"type": "summary_text", "text": ""})
            out.append(self._ev("response.reasoning_summary_part.added", item_id=item["id"],
                                output_index=self._reason_item, summary_index=0,
                                part={"type": "summary_text", "text": ""}))
        item = self._items[self._reason_item]
        item["summary"][0]["text"] += text
        out.append(self._ev("response.reasoning_summary_text.delta", item_id=item["id"],
                            output_index=self._reason_item, summary_index=0, delta=text))
        return out

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._text_item is None:
            item = _message_item("", status="in_progress")
            content = item.pop("content")
            item["content"] = []
            self._text_item, out = self._add(item)
            item["content"] = content
            out.append(self._ev("response.content_part.added", item_id=item["id"],
                                output_index=self._text_item, content_index=0,
                                part={"type": "output_text", "text": "", "annotations": []}))
        item = self._items[self._text_item]
        item["content"][0]["text"] += text
        out.append(self._ev("response.output_text.delta", item_id=item["id"],
                            output_index=self._text_item, content_index=0, delta=text,
                            logprobs=[]))
        return out

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        idx = call.get("index", 0)
        fn = call.get("function") or {}
        if idx not in self._tools:
            item = _call_item(call.get("id") or new_id("call_"), fn.get("name") or "", "",
                              status="in_progress")
            self._tools[idx], out = self._add(item)
        item = self._items[self._tools[idx]]
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item["arguments"] += args
            out.append(self._ev("response.function_call_arguments.delta", item_id=item["id"],
                                output_index=self._tools[idx], delta=args))
        return out

    def _close_items(self) -> list[bytes]:
        out: list[bytes] = []
        for idx, item in enumerate(self._items):
            kind = item["type"]
            if kind == "message":
                part = item["content"][0]
                out.append(self._ev("response.output_text.done", item_id=item["id"],
                                    output_index=idx, content_index=0, text=part["text"],
                                    logprobs=[]))
                out.append(self._ev("response.content_part.done", item_id=item["id"],
                                    output_index=idx, content_index=0, part=part))
            elif kind == "function_call":
                item["arguments"] = item["arguments"] or "{}"
                out.append(self._ev("response.function_call_arguments.done", item_id=item["id"],
                                    output_index=idx, name=item["name"],
                                    arguments=item["arguments"]))
            elif kind == "reasoning":
                part = item["summary"][0]
                out.append(self._ev("response.reasoning_summary_text.done", item_id=item["id"],
                                    output_index=idx, summary_index=0, text=part["text"]))
                out.append(self._ev("response.reasoning_summary_part.done", item_id=item["id"],
                                    output_index=idx, summary_index=0, part=part))
            if "status" in item:
                item["status"] = "completed"
            out.append(self._ev("response.output_item.done", output_index=idx, item=item))
        return out

    def close(self, usage: Usage | None) -> list[bytes]:
        """End of stream: close the items, then response.completed with the usage."""
        if self._closed:
            return []
        self._closed = True
        out = [] if self._started else self._start()
        out += self._close_items()
        reason = _incomplete(self._finish)
        final = self.shell.response("incomplete" if reason else "completed", self._items,
                                    usage, reason)
        if self.on_done is not None:
            self.on_done(final)
        out.append(self._ev("response.incomplete" if reason else "response.completed",
                            response=final))
        return out

    def error(self, message: str, code: str = "stream_error") -> bytes:
        """A broken stream: ``response.failed`` (the SDK raises on it; nothing is stored)."""
        self._closed = True
        final = self.shell.response("failed", self._items, None,
                                    error={"code": "server_error", "message": message})
        return self._ev("response.failed", response=final)
