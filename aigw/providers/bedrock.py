"""AWS Bedrock Runtime: Converse and ConverseStream.

``POST {base_url}/model/{modelId}/converse`` and ``…/converse-stream``;
``base_url`` is the runtime endpoint (``https://bedrock-runtime.us-east-1.amazonaws.com``).
Converse is one request shape for every model family on Bedrock, Anthropic's
Claude models (``anthropic.claude-…``, inference profiles ``us.anthropic.claude-…``)
included.  ConverseStream answers in the binary AWS event-stream framing
(``application/vnd.amazon.eventstream``), parsed here with botocore's parser.

The adapter stays pure: the request it builds is unsigned, and
:mod:`aigw.cloud_auth` signs it (SigV4) just before it is sent.
"""
from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from aigw.providers import base
from aigw.providers.anthropic import _json_instruction
from aigw.providers.base import (
    NotSupported,
    ProviderProtocolError,
    UpstreamStreamError,
    bad_request,
)
from aigw.types import ProviderConfig, UpstreamRequest, Usage

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                 "image/gif": "gif", "image/webp": "webp"}


# -- request ------------------------------------------------------------------

def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    data = base.parse_data_url(base.image_url(part))
    if data is None:
        raise bad_request("provider bedrock accepts images only as base64 data URLs")
    fmt = IMAGE_FORMATS.get(data[0].lower())
    if fmt is None:
        raise bad_request(f"image type {data[0]!r} is not supported by provider bedrock")
    return {"image": {"format": fmt, "source": {"bytes": data[1]}}}


def _text_block(text: str) -> dict[str, Any]:
    return {"text": text}


def _blocks(content: Any) -> list[dict[str, Any]]:
    return base.content_parts(content, _text_block, _image_block)


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    raw = fn.get("arguments") or "{}"
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise bad_request("tool_calls arguments must be a JSON object") from None
    if not isinstance(args, dict):
        raise bad_request("tool_calls arguments must be a JSON object")
    return {"toolUse": {"toolUseId": str(call.get("id") or ""), "name": fn.get("name", ""),
                        "input": args}}


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    text = base.text_of(msg.get("content"))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    content = [{"json": parsed}] if isinstance(parsed, dict) else [{"text": text}]
    return {"toolResult": {"toolUseId": str(msg.get("tool_call_id") or ""), "content": content}}


def _turn(msg: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = msg.get("role")
    if role == "user":
        return "user", _blocks(msg.get("content"))
    if role == "assistant":
        blocks = _blocks(msg.get("content"))
        blocks += [_tool_use(c) for c in msg.get("tool_calls") or [] if isinstance(c, dict)]
        return "assistant", blocks
    if role == "tool":
        return "user", [_tool_result(msg)]
    raise bad_request(f"message role {role!r} is not supported")


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if choice == "none":
        raise NotSupported("tool_choice 'none' is not supported by provider bedrock; "
                           "send the request without tools", param="tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"tool": {"name": choice["function"].get("name", "")}}
    raise bad_request("tool_choice is invalid", "tool_choice")


def to_converse(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise bad_request("messages must be a list")
    if (body.get("n") or 1) != 1:
        raise NotSupported("n > 1 is not supported by provider bedrock", param="n")
    system, turns = base.conversation(messages, "content", _turn)
    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    out: dict[str, Any] = {"messages": turns}
    if system:
        out["system"] = [{"text": s} for s in system]
    inference: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        inference["maxTokens"] = max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(src) is not None:
            inference[dst] = body[src]
    stop = body.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        out["inferenceConfig"] = inference
    tools = body.get("tools")
    if tools:
        specs = []
        for fn in base.function_tools(tools):
            spec: dict[str, Any] = {"name": fn.get("name", ""), "inputSchema": {
                "json": fn.get("parameters") or {"type": "object", "properties": {}}}}
            if fn.get("description"):
                spec["description"] = fn["description"]
            specs.append({"toolSpec": spec})
        out["toolConfig"] = {"tools": specs, "toolChoice": _tool_choice(body.get("tool_choice"))}
    return out


# -- response -----------------------------------------------------------------

def converse_usage(raw: dict[str, Any]) -> Usage:
    """Converse's inputTokens excludes cache reads and writes (like Anthropic's)."""
    read = int(raw.get("cacheReadInputTokens") or 0)
    write = int(raw.get("cacheWriteInputTokens") or 0)
    return Usage(input_tokens=int(raw.get("inputTokens") or 0) + read + write,
                 output_tokens=int(raw.get("outputTokens") or 0),
                 cache_read_tokens=read, cache_write_tokens=write)


def from_converse(resp: dict[str, Any], model: str) -> dict[str, Any]:
    message = (resp.get("output") or {}).get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise ProviderProtocolError()
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId") or base.new_id("call_"), "type": "function",
                          "function": {"name": use.get("name", ""),
                                       "arguments": orjson.dumps(use.get("input") or {})
                                       .decode()}})
        # reasoningContent and other blocks carry nothing for the canonical answer
    out_msg: dict[str, Any] = {"role": "assistant",
                               "content": "".join(text) if text or not calls else None}
    if calls:
        out_msg["tool_calls"] = calls
    out = {"id": base.new_id("chatcmpl-"), "object": "chat.completion", "created": base.now(),
           "model": model,
           "choices": [{"index": 0, "message": out_msg, "logprobs": None,
                        "finish_reason": STOP_REASONS.get(str(resp.get("stopReason")), "stop")}]}
    if isinstance(resp.get("usage"), dict):
        out["usage"] = converse_usage(resp["usage"]).to_openai()
    return out


class ConverseStreamDecoder:
    """ConverseStream's event-stream frames -> canonical chunks.

    Events: messageStart, contentBlockStart, contentBlockDelta, contentBlockStop,
    messageStop, metadata (usage; the last event).  Exceptions arrive as frames
    with ``:message-type: exception``.
    """

    def __init__(self, model: str):
        self.model = model
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False
        self._buf = EventStreamBuffer()
        self._id = ""
        self._created = 0
        self._stopped = False
        self._usage_sent = False
        self._tool_index: dict[int, int] = {}  # contentBlockIndex -> tool_calls index

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        self._buf.add_data(data)
        try:
            for msg in self._buf:
                # botocore-stubs types `headers` as int; botocore builds a dict of the
                # message's headers (botocore/eventstream.py, EventStreamBuffer._parse_headers)
                self._message(cast(dict[str, Any], msg.headers), msg.payload, out)
        except ParserError:
            raise ProviderProtocolError() from None
        return out

    def close(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._stopped:
            self.done = True
        self._flush_usage(out)
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base.chunk(self._id, self._created, self.model, 0, delta, finish)

    def _start(self, out: list[dict[str, Any]]) -> None:
        if not self._id:
            self._id = base.new_id("chatcmpl-")
            self._created = base.now()
            out.append(self._chunk({"role": "assistant", "content": ""}))

    def _flush_usage(self, out: list[dict[str, Any]]) -> None:
        if self.usage is not None and not self._usage_sent and self._id:
            self._usage_sent = True
            out.append(base.usage_chunk(self._id, self._created, self.model, self.usage))

    def _message(self, headers: dict[str, Any], payload: bytes, out: list[dict[str, Any]]) -> None:
        kind = headers.get(":message-type")
        if kind in ("exception", "error"):
            name = headers.get(":exception-type") or headers.get(":error-code") or "error"
            detail = base.summarize_error(200, payload) if payload else \
                str(headers.get(":error-message") or "")
            raise UpstreamStreamError(base.scrub(f"{name}: {detail}"), out)
        if kind != "event" or self.done:
            return
        event = headers.get(":event-type")
        try:
            obj = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            raise ProviderProtocolError() from None
        if not isinstance(obj, dict):
            raise ProviderProtocolError()
        if event == "messageStart":
            self._start(out)
        elif event == "contentBlockStart":
            self._start(out)
            use = (obj.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                idx = len(self._tool_index)
                self._tool_index[int(obj.get("contentBlockIndex") or 0)] = idx
                out.append(self._chunk({"tool_calls": [{
                    "index": idx, "id": use.get("toolUseId") or base.new_id("call_"),
                    "type": "function",
                    "function": {"name": use.get("name", ""), "arguments": ""}}]}))
        elif event == "contentBlockDelta":
            self._start(out)
            delta = obj.get("delta") or {}
            if isinstance(delta.get("text"), str) and delta["text"]:
                out.append(self._chunk({"content": delta["text"]}))
            elif isinstance(delta.get("toolUse"), dict):
                known = self._tool_index.get(int(obj.get("contentBlockIndex") or 0))
                args = delta["toolUse"].get("input")
                if known is not None and isinstance(args, str) and args:
                    out.append(self._chunk({"tool_calls": [{
                        "index": known, "function": {"arguments": args}}]}))
        elif event == "messageStop":
            self._start(out)
            self._stopped = True
            self.finish_reason = STOP_REASONS.get(str(obj.get("stopReason")), "stop")
            out.append(self._chunk({}, self.finish_reason))
        elif event == "metadata":
            if isinstance(obj.get("usage"), dict):
                self.usage = converse_usage(obj["usage"])
            if self._stopped:
                self.done = True
                self._flush_usage(out)
        # contentBlockStop and unknown events carry nothing for us


class BedrockAdapter:
    type = "bedrock"

    def _url(self, model: str, provider: ProviderConfig, action: str) -> str:
        return f"{provider.base_url.rstrip('/')}/model/{quote(model, safe='')}/{action}"

    def chat_request(self, body: dict[str, Any], model: str, provider: ProviderConfig, *,
                     stream: bool) -> UpstreamRequest:
        headers = base.json_headers(provider, {})
        if stream:
            headers["accept"] = "application/vnd.amazon.eventstream"
        return UpstreamRequest("POST", self._url(model, provider,
                                                 "converse-stream" if stream else "converse"),
                               headers, base.dumps(to_converse(body)))

    def chat_response(self, data: bytes, model: str) -> dict[str, Any]:
        resp = base.loads(data)
        if not isinstance(resp, dict):
            raise ProviderProtocolError()
        return from_converse(resp, model)

    def chat_stream(self, model: str) -> ConverseStreamDecoder:
        return ConverseStreamDecoder(model)

    def embeddings_request(self, body: dict[str, Any], model: str,
                           provider: ProviderConfig) -> UpstreamRequest:
        raise NotSupported("provider bedrock serves chat (Converse) only; no embeddings")

    def embeddings_response(self, data: bytes, model: str) -> dict[str, Any]:
        raise NotSupported("provider bedrock serves chat (Converse) only; no embeddings")

    def error_summary(self, status: int, data: bytes) -> str:
        return base.summarize_error(status, data)
