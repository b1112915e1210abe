"""Anthropic Messages API (``POST {base_url}/v1/messages``).

Canonical (OpenAI chat) requests are translated into Messages requests, and
Messages responses / SSE streams back into chat completions and chunks.
See docs/providers.md for the full mapping table.
"""
from __future__ import annotations

import re
from typing import Any

import orjson

from aigw.providers import base
from aigw.providers.base import (
    NotSupported,
    ProviderProtocolError,
    UpstreamStreamError,
    bad_request,
)
from aigw.sse import Event
from aigw.types import ProviderConfig, UpstreamRequest, Usage

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def _tool_id(call_id: Any) -> str:
    return _BAD_ID_CHARS.sub("_", str(call_id)) or "call"


# -- request ------------------------------------------------------------------

def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = base.image_url(part)
    data = base.parse_data_url(url)
    if data:
        return {"type": "image", "source": {"type": "base64", "media_type": data[0],
                                            "data": data[1]}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request("image_url must be an http(s) or base64 data URL")


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content -> Anthropic content blocks (empty text dropped)."""
    return base.content_parts(content, _text_block, _image_block)


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    args = fn.get("arguments") or "{}"
    try:
        parsed = orjson.loads(args) if isinstance(args, str) else args
    except orjson.JSONDecodeError:
        raise bad_request("tool_calls arguments must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise bad_request("tool_calls arguments must be a JSON object")
    return {"type": "tool_use", "id": _tool_id(call.get("id")), "name": fn.get("name", ""),
            "input": parsed}


def _turn(msg: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """One non-system OpenAI message -> (Anthropic role, content blocks)."""
    role = msg.get("role")
    if role == "user":
        return "user", _content_blocks(msg.get("content"))
    if role == "assistant":
        blocks = _content_blocks(msg.get("content"))
        blocks += [_tool_use(c) for c in msg.get("tool_calls") or [] if isinstance(c, dict)]
        return "assistant", blocks
    if role == "tool":
        content = msg.get("content")
        result: dict[str, Any] = {"type": "tool_result",
                                  "tool_use_id": _tool_id(msg.get("tool_call_id"))}
        if isinstance(content, str):
            result["content"] = content
        else:
            result["content"] = [b for b in _content_blocks(content) if b["type"] == "text"]
        return "user", [result]
    raise bad_request(f"message role {role!r} is not supported")


def _messages(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Split system text off and build alternating Anthropic turns."""
    return base.conversation(messages, "content", _turn)


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name", "")}
    else:
        raise bad_request("tool_choice is invalid", "tool_choice")
    if parallel is False:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def _json_instruction(fmt: Any) -> str | None:
    """response_format has no Anthropic equivalent: best effort as a system instruction."""
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "Respond only with a single valid JSON object."
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is not None:
            return ("Respond only with a single valid JSON object that conforms to this "
                    "JSON Schema:\n" + orjson.dumps(schema).decode())
        return "Respond only with a single valid JSON object."
    return None


def to_anthropic(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise bad_request("messages must be a list")
    if (body.get("n") or 1) != 1:
        raise NotSupported("n > 1 is not supported by provider anthropic", param="n")
    system, turns = _messages(messages)
    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)

    out: dict[str, Any] = {"model": model, "messages": turns}
    if system:
        out["system"] = "\n\n".join(system)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = max_tokens or DEFAULT_MAX_TOKENS
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    tools = body.get("tools")
    if tools:
        out["tools"] = []
        for fn in base.function_tools(tools):
            entry = {"name": fn.get("name", ""),
                     "input_schema": fn.get("parameters") or {"type": "object",
                                                              "properties": {}}}
            if fn.get("description"):
                entry["description"] = fn["description"]
            out["tools"].append(entry)
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and tools:
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if stream:
        out["stream"] = True
    return out


# -- response -----------------------------------------------------------------

def anthropic_usage(raw: dict[str, Any]) -> Usage:
    """Anthropic counts cache reads/writes apart from input_tokens; fold them in."""
    read = int(raw.get("cache_read_input_tokens") or 0)
    write = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(input_tokens=int(raw.get("input_tokens") or 0) + read + write,
                 output_tokens=int(raw.get("output_tokens") or 0),
                 cache_read_tokens=read, cache_write_tokens=write)


def from_anthropic(resp: dict[str, Any], model: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in resp.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {})
                                       .decode()}})
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    out = {"id": resp.get("id") or base.new_id("chatcmpl-"), "object": "chat.completion",
           "created": base.now(), "model": resp.get("model") or model,
           "choices": [{"index": 0, "message": message, "logprobs": None,
                        "finish_reason": STOP_REASONS.get(str(resp.get("stop_reason")), "stop")}]}
    if isinstance(resp.get("usage"), dict):
        out["usage"] = anthropic_usage(resp["usage"]).to_openai()
    return out


class AnthropicStreamDecoder(base.SSEStreamDecoder):
    """Anthropic Messages SSE -> canonical chunks, event by event."""

    def __init__(self, model: str):
        super().__init__(model)
        self._raw_usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}  # content block index -> tool_calls index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base.chunk(self._id, self._created, self.model, 0, delta, finish)

    def _event(self, ev: Event, out: list[dict[str, Any]]) -> None:
        name, data = ev.event, ev.data
        if self.done or not data.strip():
            return
        obj = base.loads(data.encode())
        if not isinstance(obj, dict):
            raise ProviderProtocolError()
        kind = obj.get("type") or name
        if kind == "ping":
            return
        if kind == "error":
            raise UpstreamStreamError(base.summarize_error(200, data.encode()), out)
        if kind == "message_start":
            msg = obj.get("message") or {}
            self._id = msg.get("id") or base.new_id("chatcmpl-")
            self._created = base.now()
            self.model = msg.get("model") or self.model
            self._usage(msg.get("usage"))
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                out.append(self._chunk({"content": block["text"]}))
            elif block.get("type") == "tool_use":
                idx = len(self._tool_index)
                self._tool_index[obj.get("index", 0)] = idx
                out.append(self._chunk({"tool_calls": [{
                    "index": idx, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}]}))
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta":
                out.append(self._chunk({"content": delta.get("text", "")}))
            elif delta.get("type") == "input_json_delta":
                known = self._tool_index.get(obj.get("index", 0))
                if known is not None and delta.get("partial_json"):
                    out.append(self._chunk({"tool_calls": [{
                        "index": known, "function": {"arguments": delta["partial_json"]}}]}))
        elif kind == "message_delta":
            self._usage(obj.get("usage"))
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = STOP_REASONS.get(reason, "stop")
                out.append(self._chunk({}, self.finish_reason))
        elif kind == "message_stop":
            self.done = True
            self._flush_usage(out)
        # content_block_stop, thinking deltas and unknown events carry nothing for us

    def _usage(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self._raw_usage.update({k: v for k, v in raw.items() if v is not None})
            self.usage = anthropic_usage(self._raw_usage)

    def _flush_usage(self, out: list[dict[str, Any]]) -> None:
        if self.usage is not None and not self._usage_sent and self._id:
            self._usage_sent = True
            out.append(base.usage_chunk(self._id, self._created, self.model, self.usage))


class AnthropicAdapter:
    """``base_url`` is the API origin (``https://api.anthropic.com``); a trailing
    ``/v1`` is tolerated."""

    type = "anthropic"

    def _url(self, provider: ProviderConfig) -> str:
        root = provider.base_url.rstrip("/")
        return (root if root.endswith("/v1") else root + "/v1") + "/messages"

    def chat_request(self, body: dict[str, Any], model: str, provider: ProviderConfig, *,
                     stream: bool) -> UpstreamRequest:
        headers = {"anthropic-version": API_VERSION,
                   **{k.lower(): v for k, v in provider.headers.items()}}
        headers["content-type"] = "application/json"
        if provider.api_key:
            headers["x-api-key"] = provider.api_key
        return UpstreamRequest("POST", self._url(provider), headers,
                               base.dumps(to_anthropic(body, model, stream=stream)))

    def chat_response(self, data: bytes, model: str) -> dict[str, Any]:
        resp = base.loads_with_list(data, "content")
        return from_anthropic(resp, model)

    def chat_stream(self, model: str) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(model)

    def embeddings_request(self, body: dict[str, Any], model: str,
                           provider: ProviderConfig) -> UpstreamRequest:
        raise NotSupported("provider anthropic has no embeddings API")

    def embeddings_response(self, data: bytes, model: str) -> dict[str, Any]:
        raise NotSupported("provider anthropic has no embeddings API")

    def error_summary(self, status: int, data: bytes) -> str:
        return base.summarize_error(status, data)
