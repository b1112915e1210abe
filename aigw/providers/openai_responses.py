"""OpenAI's Responses API as an upstream (``POST {base_url}/responses``).

Used for Responses API clients whose target is an ``openai`` provider: the
target is called on the API the client speaks, so OpenAI's reasoning
summaries come back (Chat Completions hides them).  The request is built
from the canonical chat request — the conversation the gateway rebuilt and
ai-redact scanned — never from the client's raw body, and is sent with
``store: false`` (the gateway keeps the conversation, tenant-scoped).  The
answer is read back into canonical chat form, so every plugin (restore,
usage, cost, cache) and the Responses encoder apply as for any provider.
"""
from __future__ import annotations

from typing import Any

from aigw.providers import base
from aigw.providers.base import ProviderProtocolError, UpstreamStreamError
from aigw.sse import Event
from aigw.types import ProviderConfig, UpstreamRequest, Usage


def _parts(content: Any, role: str) -> Any:
    if isinstance(content, str) or content is None:
        return content or ""
    out = []
    for p in content:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "text":
            out.append({"type": "output_text" if role == "assistant" else "input_text",
                        "text": p.get("text", "")})
        elif p.get("type") == "image_url":
            img = p.get("image_url") or {}
            part = {"type": "input_image", "image_url": img.get("url") if isinstance(img, dict) else img}
            if isinstance(img, dict) and img.get("detail"):
                part["detail"] = img["detail"]
            out.append(part)
        else:
            raise base.bad_request(f"content part type {p.get('type')!r} is not supported")
    return out


def to_responses(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """Canonical chat request -> Responses request (stateless)."""
    messages = list(body.get("messages") or [])
    out: dict[str, Any] = {"model": model, "store": False}
    if messages and messages[0].get("role") in ("system", "developer"):
        out["instructions"] = base.text_of(messages[0].get("content"))
        messages = messages[1:]
    items: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": m.get("tool_call_id"),
                          "output": base.text_of(m.get("content"))})
            continue
        if role == "assistant":
            text = base.text_of(m.get("content"))
            if text:
                items.append({"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": text}]})
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"),
                              "name": fn.get("name"), "arguments": fn.get("arguments") or "{}"})
            continue
        items.append({"type": "message", "role": role, "content": _parts(m.get("content"), role)})
    out["input"] = items
    if body.get("max_tokens") or body.get("max_completion_tokens"):
        out["max_output_tokens"] = body.get("max_completion_tokens") or body.get("max_tokens")
    for key in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("tools"):
        tools = []
        for fn in base.function_tools(body["tools"]):
            tool = {"type": "function", "name": fn.get("name"),
                    "parameters": fn["parameters"] if isinstance(fn.get("parameters"), dict)
                    else {"type": "object", "properties": {}}}
            for key in ("description", "strict"):
                if key in fn:
                    tool[key] = fn[key]
            tools.append(tool)
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            out["tool_choice"] = {"type": "function", "name": (choice.get("function") or {}).get("name")}
        elif choice is not None:
            out["tool_choice"] = choice
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        js = fmt.get("json_schema") or {}
        out["text"] = {"format": {"type": "json_schema", **js}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["text"] = {"format": {"type": "json_object"}}
    if body.get("reasoning_effort"):
        out["reasoning"] = {"effort": body["reasoning_effort"], "summary": "auto"}
    if stream:
        out["stream"] = True
    return out


def responses_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(input_tokens=int(raw.get("input_tokens") or 0),
                 output_tokens=int(raw.get("output_tokens") or 0),
                 cache_read_tokens=int((raw.get("input_tokens_details") or {}).get("cached_tokens") or 0),
                 reasoning_tokens=int((raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0))


def _finish(resp: dict[str, Any], has_calls: bool) -> str:
    if resp.get("status") == "incomplete":
        reason = (resp.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"


def from_responses(resp: dict[str, Any], model: str) -> dict[str, Any]:
    text, calls, reasoning = [], [], []
    for item in resp.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text.append(part.get("text") or "")
        elif kind == "function_call":
            calls.append({"id": item.get("call_id") or base.new_id("call_"), "type": "function",
                          "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}})
        elif kind == "reasoning":
            reasoning += [s.get("text", "") for s in item.get("summary") or () if isinstance(s, dict)]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
    out = {"id": resp.get("id") or base.new_id("chatcmpl-"), "object": "chat.completion",
           "created": int(resp.get("created_at") or base.now()), "model": resp.get("model") or model,
           "choices": [{"index": 0, "message": message, "logprobs": None,
                        "finish_reason": _finish(resp, bool(calls))}]}
    usage = responses_usage(resp.get("usage"))
    if usage is not None:
        out["usage"] = usage.to_openai()
    return out


class ResponsesStreamDecoder(base.SSEStreamDecoder):
    """Responses typed events -> canonical chunks."""

    def __init__(self, model: str):
        super().__init__(model)
        self._tools: dict[Any, int] = {}  # item id / output index -> tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base.chunk(self._id, self._created, self.model, 0, delta, finish)

    def _event(self, ev: Event, out: list[dict[str, Any]]) -> None:
        if self.done or not ev.data.strip():
            return
        obj = base.loads(ev.data.encode())
        if not isinstance(obj, dict):
            raise ProviderProtocolError()
        kind = obj.get("type") or ev.event
        if kind in ("error", "response.failed"):
            raise UpstreamStreamError(base.summarize_error(200, ev.data.encode()), out)
        if kind == "response.created":
            resp = obj.get("response") or {}
            self._id = resp.get("id") or base.new_id("chatcmpl-")
            self._created = int(resp.get("created_at") or base.now())
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "response.output_text.delta" and obj.get("delta"):
            out.append(self._chunk({"content": obj["delta"]}))
        elif kind == "response.reasoning_summary_text.delta" and obj.get("delta"):
            out.append(self._chunk({"reasoning_content": obj["delta"]}))
        elif kind == "response.output_item.added":
            item = obj.get("item") or {}
            if item.get("type") == "function_call":
                idx = len(self._tools)
                self._tools[item.get("id") or obj.get("output_index")] = idx
                self._tools[obj.get("output_index")] = idx
                out.append(self._chunk({"tool_calls": [{
                    "index": idx, "id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}}]}))
        elif kind == "response.function_call_arguments.delta" and obj.get("delta"):
            known = self._tools.get(obj.get("item_id"), self._tools.get(obj.get("output_index")))
            if known is not None:
                out.append(self._chunk({"tool_calls": [{"index": known,
                                                        "function": {"arguments": obj["delta"]}}]}))
        elif kind in ("response.completed", "response.incomplete"):
            resp = obj.get("response") or {}
            self.usage = responses_usage(resp.get("usage")) or self.usage
            self.finish_reason = _finish(resp, bool(self._tools))
            out.append(self._chunk({}, self.finish_reason))
            self.done = True
            self._flush_usage(out)

    def _flush_usage(self, out: list[dict[str, Any]]) -> None:
        if self.usage is not None and not self._usage_sent and self._id:
            self._usage_sent = True
            out.append(base.usage_chunk(self._id, self._created, self.model, self.usage))


class OpenAIResponsesAdapter:
    """The ``openai`` provider reached on ``/responses`` (Responses API clients only)."""

    type = "openai"

    def chat_request(self, body: dict[str, Any], model: str, provider: ProviderConfig, *,
                     stream: bool) -> UpstreamRequest:
        auth = {"authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
        return UpstreamRequest("POST", base.api_root(provider.base_url) + "/responses",
                               base.json_headers(provider, auth),
                               base.dumps(to_responses(body, model, stream=stream)))

    def chat_response(self, data: bytes, model: str) -> dict[str, Any]:
        resp = base.loads_with_list(data, "output")
        return from_responses(resp, model)

    def chat_stream(self, model: str) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder(model)

    def error_summary(self, status: int, data: bytes) -> str:
        return base.summarize_error(status, data)


ADAPTER = OpenAIResponsesAdapter()
