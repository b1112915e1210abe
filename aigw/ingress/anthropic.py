"""Anthropic Messages API on the client side (``/v1/messages``).

``to_openai_request`` turns a Messages request into the canonical OpenAI chat
request; ``from_openai_response`` and ``StreamEncoder`` turn the canonical
answer back into a Message / Messages SSE events, whatever provider served it.
"""
from __future__ import annotations

from typing import Any

import orjson

from aigw.errors import GatewayError
from aigw.ingress.openai import MAX_MESSAGES
from aigw.sse import encode
from aigw.types import Usage

# Where a Messages request holds what: the translation below and ai-redact's walker
# (aigw/redact/fields.py) both read the request shape from here.
MESSAGES_FIELD = "messages"  # the conversation: a list of {role, content}
SYSTEM_FIELD = "system"      # the system prompt: a string or a list of text blocks
# reasoning blocks and their signed or opaque field: passed on untouched to an Anthropic
# target, never replayed to another provider
REASONING_BLOCKS = {"thinking": "signature", "redacted_thinking": "data"}
BINARY_SOURCE = "base64"     # a source of this type carries binary ``data`` (other sources: text, url)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def _block(b: Any, param: str) -> str | None:
    """A content block's type (None when ``b`` is not a block); checks the fields every
    block may carry, so a wrong shape is a 400 here and never an error further on."""
    if not isinstance(b, dict):
        return None
    kind = b.get("type")
    if not isinstance(kind, str):
        return None
    cc = b.get("cache_control")
    if cc is not None and not isinstance(cc, dict):
        raise _bad("cache_control must be an object", param)
    if kind == "text" and not isinstance(b.get("text"), str):
        raise _bad("text block needs text", param)
    return kind


# -- request ------------------------------------------------------------------

def _text_of_blocks(blocks: Any, param: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _bad(f"{param} must be a string or a list of text blocks", param)
    texts = []
    for b in blocks:
        if _block(b, param) != "text":
            raise _bad(f"{param} blocks must be text blocks", param)
        texts.append(b["text"])
    return "\n\n".join(texts) if param == "system" else "".join(texts)


def _texts(texts: list[str]) -> str | list[dict[str, Any]]:
    """Several text blocks stay several text parts: joining them would change what the
    model reads (``"4111 1111"`` + ``"1111 1111"`` is not ``"4111 11111111 1111"``)."""
    if len(texts) == 1:
        return texts[0]
    if not texts:
        return ""
    return [{"type": "text", "text": t} for t in texts]


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    src = block.get("source")
    if not isinstance(src, dict):
        raise _bad("image block without a source", param)
    if src.get("type") == BINARY_SOURCE and isinstance(src.get("data"), str):
        url = f"data:{src.get('media_type', 'image/png')};base64,{src['data']}"
    elif src.get("type") == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    else:
        raise _bad("image source must be base64 or url", param)
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any], param: str, dropped: list[str] | None = None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """tool_result -> (OpenAI tool message, image parts to pass in a user turn)."""
    content = block.get("content")
    images: list[dict[str, Any]] = []
    text: str | list[dict[str, Any]]
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts: list[str] = []
        for b in content:
            kind = _block(b, param)
            if kind == "text":
                texts.append(b["text"])
            elif kind == "image":
                images.append(_image_part(b, param))
            elif dropped is not None and isinstance(kind, str):
                dropped.append(kind)  # documents, search results: only an Anthropic target reads them
            else:
                raise _bad("tool_result content blocks must be text or image blocks", param)
        text = _texts(texts)
    else:
        raise _bad("tool_result content must be a string or a list", param)
    if not isinstance(block.get("tool_use_id"), str):
        raise _bad("tool_result needs tool_use_id", param)
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}, images


def _document_text(block: dict[str, Any]) -> str | None:
    """The text of a plain-text document block (what a translated request can carry)."""
    src = block.get("source")
    if isinstance(src, dict) and src.get("type") == "text":
        data = src.get("data")
        if isinstance(data, str):
            return data
    return None


def _user_messages(content: Any, param: str,
                   dropped: list[str] | None = None) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise _bad("message content must be a string or a list of blocks", param)
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = _block(block, param)
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, param))
        elif kind == "tool_result":
            msg, images = _tool_result(block, param, dropped)
            tools.append(msg)
            parts.extend(images)
        elif kind == "document" and _document_text(block) is not None:
            parts.append({"type": "text", "text": _document_text(block)})
        elif dropped is not None and isinstance(kind, str):
            dropped.append(kind)
        else:
            raise _bad("user content blocks must be text, image or tool_result blocks", param)
    out = list(tools)  # tool answers must directly follow the assistant's tool calls
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: Any, param: str,
                       dropped: list[str] | None = None) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise _bad("message content must be a string or a list of blocks", param)
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = _block(block, param)
        if kind == "text":
            text.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad("tool_use block needs id and name", param)
            if block.get("input") is not None and not isinstance(block["input"], dict):
                raise _bad("tool_use input must be an object", param)
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"],
                                       "arguments": orjson.dumps(block.get("input") or {})
                                       .decode()}})
        elif kind in REASONING_BLOCKS:
            continue  # provider-specific reasoning is not replayed to other providers
        elif dropped is not None and isinstance(kind, str):
            dropped.append(kind)  # server tool use and results: only an Anthropic target reads them
        else:
            raise _bad("assistant content blocks must be text, tool_use or thinking blocks", param)
    msg: dict[str, Any] = {"role": "assistant",
                           "content": _texts(text) if text or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: Any, dropped: list[str] | None = None) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad("each tool needs a name", "tools")
        if tool.get("type") not in (None, "custom"):
            if dropped is not None and isinstance(tool.get("type"), str):
                dropped.append(tool["type"])  # server tools (web search, bash...)
                continue
            raise _bad("this tool type is not supported (only custom tools)", "tools")
        if tool.get("input_schema") is not None and not isinstance(tool["input_schema"], dict):
            raise _bad("tool input_schema must be a JSON Schema object", "tools")
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            raise _bad("tool description must be a string", "tools")
        fn: dict[str, Any] = {"name": tool["name"],
                              "parameters": tool.get("input_schema") or {"type": "object",
                                                                        "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    if not isinstance(choice, dict):
        raise _bad("tool_choice must be an object", "tool_choice")
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise _bad("tool_choice type is invalid", "tool_choice")


def to_openai_request(body: dict[str, Any], dropped: list[str] | None = None) -> dict[str, Any]:
    """Anthropic Messages request -> canonical OpenAI chat request.

    With ``dropped`` (a list), blocks and tools the canonical shape cannot carry
    (documents other than plain text, server tools and their results, search
    results...) are left out and their types appended to it instead of refused:
    the request can then only be served by an Anthropic target, which gets the
    client's own body (``aigw.relay.native``)."""
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object", "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("model is required", "model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens must be a positive integer", "max_tokens")
    messages = body.get(MESSAGES_FIELD)
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"messages is too long: at most {MAX_MESSAGES} messages per request", "messages")
    for key, kind, what in (("top_k", int, "an integer"), ("metadata", dict, "an object"),
                            ("thinking", dict, "an object"), ("service_tier", str, "a string")):
        v = body.get(key)
        if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
            raise _bad(f"{key} must be {what}", key)

    out_msgs: list[dict[str, Any]] = []
    if body.get(SYSTEM_FIELD) is not None:
        system = _text_of_blocks(body[SYSTEM_FIELD], "system")
        if system:
            out_msgs.append({"role": "system", "content": system})
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _bad("each message must be an object", param)
        role = msg.get("role")
        if role == "user":
            out_msgs.extend(_user_messages(msg.get("content"), param, dropped))
        elif role == "assistant":
            out_msgs.append(_assistant_message(msg.get("content"), param, dropped))
        else:
            raise _bad("message role must be user or assistant", f"{param}.role")

    out: dict[str, Any] = {"model": body["model"], "messages": out_msgs,
                           "max_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            if not isinstance(body[key], (int, float)) or isinstance(body[key], bool):
                raise _bad(f"{key} must be a number", key)
            out[key] = body[key]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences must be a list of strings", "stop_sequences")
        if stops:
            out["stop"] = stops
    if body.get("tools"):
        out["tools"] = _tools(body["tools"], dropped)
        if not out["tools"]:
            del out["tools"]
    if body.get("tool_choice") is not None:
        choice, parallel = _tool_choice(body["tool_choice"])
        if out.get("tools"):
            out["tool_choice"] = choice
            if parallel is False:
                out["parallel_tool_calls"] = False
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be a boolean", "stream")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# -- response -----------------------------------------------------------------

def message_id(openai_id: Any) -> str:
    """A ``msg_…`` id derived from the canonical completion id."""
    raw = str(openai_id or "")
    if raw.startswith("msg_"):
        return raw
    return "msg_" + (raw.removeprefix("chatcmpl-") or "gateway")


def anthropic_usage(usage: Usage) -> dict[str, int]:
    """OpenAI-semantics usage -> Anthropic's (input excludes cache reads/writes)."""
    return {"input_tokens": max(usage.input_tokens - usage.cache_read_tokens
                                - usage.cache_write_tokens, 0),
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens}


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def from_openai_response(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Canonical chat.completion -> Anthropic Message."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        # another provider's reasoning (Gemini thought summaries, reasoning_content of
        # OpenAI-compatible servers): a thinking block with no signature, since only
        # Anthropic can sign one (the pass-through drops unsigned blocks on the way back)
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": _tool_input(fn.get("arguments"))})
    usage = Usage.from_openai(resp.get("usage")) or Usage()
    out_usage: dict[str, Any] = anthropic_usage(usage)
    if isinstance(resp.get("usage"), dict) and resp["usage"].get("estimated") is True:
        out_usage["estimated"] = True  # the gateway's count, marked as on OpenAI routes
    return {"id": message_id(resp.get("id")), "type": "message", "role": "assistant",
            "model": model, "content": content,
            "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
            "stop_sequence": None, "usage": out_usage}


class StreamEncoder:
    """Canonical chunks -> Anthropic Messages SSE events, incrementally.

    Only choice 0 is translated (Anthropic has no ``n``).  Blocks are opened
    and closed in order: a text block, then one tool_use block per tool call.
    ``message_delta`` (stop reason, final usage) and ``message_stop`` are sent
    by ``close``, since usage arrives after the finish reason.
    """

    def __init__(self, model: str, input_tokens: int | None = None):
        self.model = model
        self.input_tokens = input_tokens
        self._started = False
        self._closed = False
        self._block = -1            # index of the open content block, -1 if none
        self._block_kind: str | None = None
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool index -> block index
        self._finish: str | None = None
        self._usage: Usage | None = None

    def _start(self, chunk_id: Any) -> list[bytes]:
        self._started = True
        msg: dict[str, Any] = {"id": message_id(chunk_id), "type": "message", "role": "assistant",
               "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": self.input_tokens or 0, "output_tokens": 0}}
        return [encode({"type": "message_start", "message": msg}, event="message_start")]

    def _stop_block(self) -> list[bytes]:
        if self._block < 0:
            return []
        ev = encode({"type": "content_block_stop", "index": self._block},
                    event="content_block_stop")
        self._block, self._block_kind = -1, None
        return [ev]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._stop_block()
        self._block, self._block_kind = self._next_block, kind
        self._next_block += 1
        out.append(encode({"type": "content_block_start", "index": self._block,
                           "content_block": block}, event="content_block_start"))
        return out

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return encode({"type": "content_block_delta", "index": index, "delta": delta},
                      event="content_block_delta")

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if self._closed:
            return out
        if not self._started:
            out += self._start(chunk.get("id"))
        if isinstance(chunk.get("usage"), dict):
            self._usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                if self._block_kind != "thinking":
                    out += self._open_block("thinking", {"type": "thinking", "thinking": "",
                                                         "signature": ""})
                out.append(self._delta(self._block, {"type": "thinking_delta",
                                                     "thinking": reasoning}))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block_kind != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out.append(self._delta(self._block, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                out += self._stop_block()
        return out

    def _tool_delta(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        idx = call.get("index", 0)
        fn = call.get("function") or {}
        if idx not in self._tool_blocks:
            out += self._open_block("tool", {"type": "tool_use", "id": call.get("id") or "",
                                             "name": fn.get("name") or "", "input": {}})
            self._tool_blocks[idx] = self._block
        args = fn.get("arguments")
        if args:
            out.append(self._delta(self._tool_blocks[idx],
                                   {"type": "input_json_delta", "partial_json": args}))
        return out

    def close(self, usage: Usage | None) -> list[bytes]:
        """End of stream: close blocks, send stop reason and usage, then message_stop."""
        if self._closed:
            return []
        self._closed = True
        out: list[bytes] = [] if self._started else self._start(None)
        out += self._stop_block()
        final = usage or self._usage
        if final is None:
            delta_usage: dict[str, int] = {"output_tokens": 0}
        else:
            delta_usage = anthropic_usage(final)
            if final.estimated:
                delta_usage["estimated"] = True  # the gateway's count (as usage.estimated on OpenAI routes)
        out.append(encode({"type": "message_delta",
                           "delta": {"stop_reason": STOP_REASONS.get(self._finish or "stop",
                                                                     "end_turn"),
                                     "stop_sequence": None},
                           "usage": delta_usage}, event="message_delta"))
        out.append(encode({"type": "message_stop"}, event="message_stop"))
        return out
