"""Google Gemini API (Generative Language): generateContent / streamGenerateContent.

``{base_url}/v1beta/models/{model}:generateContent`` and
``…:streamGenerateContent?alt=sse``; ``base_url`` is the origin
(``https://generativelanguage.googleapis.com``); a base_url already ending in a
version segment (``/v1beta``, ``/v1``) is used as given.
"""
from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import quote

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

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

# JSON Schema keywords the Gemini `Schema` object rejects
_SCHEMA_DROP = {"$schema", "$id", "additionalProperties", "strict", "$comment"}


def clean_schema(schema: Any) -> Any:
    """Drop JSON Schema keywords Gemini's OpenAPI-subset schema does not accept."""
    if isinstance(schema, dict):
        return {k: clean_schema(v) for k, v in schema.items() if k not in _SCHEMA_DROP}
    if isinstance(schema, list):
        return [clean_schema(v) for v in schema]
    return schema


# -- request ------------------------------------------------------------------

def _image_part(part: dict[str, Any]) -> dict[str, Any]:
    url = base.image_url(part)
    data = base.parse_data_url(url)
    if data:
        return {"inlineData": {"mimeType": data[0], "data": data[1]}}
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _text_part(text: str) -> dict[str, Any]:
    return {"text": text}


def _parts(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content -> Gemini parts (empty text dropped)."""
    return base.content_parts(content, _text_part, _image_part)


def _json_args(raw: Any) -> dict[str, Any]:
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise bad_request("tool_calls arguments must be a JSON object") from None
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise bad_request("tool_calls arguments must be a JSON object")
    return args


def _tool_response(content: Any) -> dict[str, Any]:
    text = base.text_of(content)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"content": text}


def _contents(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Split system text off and build alternating Gemini contents."""
    names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse

    def turn(msg: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        role = msg.get("role")
        if role == "user":
            return "user", _parts(msg.get("content"))
        if role == "assistant":
            parts = _parts(msg.get("content"))
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                names[str(call.get("id"))] = fn.get("name", "")
                parts.append({"functionCall": {"name": fn.get("name", ""),
                                               "args": _json_args(fn.get("arguments"))}})
            return "model", parts
        if role == "tool":
            name = names.get(str(msg.get("tool_call_id"))) or msg.get("name")
            if not name:
                raise bad_request("tool message does not answer an earlier tool call")
            return "user", [{"functionResponse": {
                "name": name, "response": _tool_response(msg.get("content"))}}]
        raise bad_request(f"message role {role!r} is not supported")

    return base.conversation(messages, "parts", turn)


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]
        return {"functionCallingConfig": {"mode": mode}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"functionCallingConfig": {"mode": "ANY",
                                          "allowedFunctionNames": [choice["function"]["name"]]}}
    raise bad_request("tool_choice is invalid", "tool_choice")


_THINKING_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        cfg["maxOutputTokens"] = max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                     ("presence_penalty", "presencePenalty"),
                     ("frequency_penalty", "frequencyPenalty")):
        if body.get(src) is not None:
            cfg[dst] = body[src]
    effort = body.get("reasoning_effort")
    if effort in _THINKING_BUDGET:
        # OpenAI's effort levels as Gemini thinking budgets (the budgets Google's own
        # OpenAI-compatible endpoint uses); thought summaries come back as reasoning
        cfg["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGET[effort],
                                 "includeThoughts": _THINKING_BUDGET[effort] > 0}
    stop = body.get("stop")
    if stop:
        cfg["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if (body.get("n") or 1) != 1:
        cfg["candidateCount"] = body["n"]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        cfg["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt["type"] == "json_schema" and schema is not None:
            cfg["responseSchema"] = clean_schema(schema)
    return cfg


def to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise bad_request("messages must be a list")
    system, contents = _contents(messages)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    tools = body.get("tools")
    if tools:
        decls = []
        for fn in base.function_tools(tools):
            decl = {"name": fn.get("name", "")}
            if fn.get("description"):
                decl["description"] = fn["description"]
            if fn.get("parameters"):
                decl["parameters"] = clean_schema(fn["parameters"])
            decls.append(decl)
        out["tools"] = [{"functionDeclarations": decls}]
        cfg = _tool_config(body.get("tool_choice"))
        if cfg:
            out["toolConfig"] = cfg
    gen = _generation_config(body)
    if gen:
        out["generationConfig"] = gen
    return out


# -- response -----------------------------------------------------------------

def gemini_usage(meta: dict[str, Any]) -> Usage:
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(meta.get("promptTokenCount") or 0)
        + int(meta.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(meta.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(meta.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts)


def _split_parts(parts: list[Any], call_prefix: int = 0) -> tuple[str, list[dict[str, Any]], str]:
    """Candidate parts -> (visible text, OpenAI tool_calls, thought summaries).

    Thought summaries (parts with ``thought: true``, sent when the request asked
    for ``includeThoughts``) become the canonical ``reasoning_content``."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if part.get("thought"):
            if isinstance(part.get("text"), str):
                thoughts.append(part["text"])
            continue
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            fc = part["functionCall"]
            calls.append({"index": call_prefix + len(calls),
                          "id": fc.get("id") or base.new_id("call_"), "type": "function",
                          "function": {"name": fc.get("name", ""),
                                       "arguments": orjson.dumps(fc.get("args") or {})
                                       .decode()}})
    return "".join(text), calls, "".join(thoughts)


def _finish(reason: str | None, has_calls: bool) -> str | None:
    if not reason or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def from_gemini(resp: dict[str, Any], model: str) -> dict[str, Any]:
    choices = []
    for pos, cand in enumerate(resp.get("candidates") or []):
        parts = (cand.get("content") or {}).get("parts") or []
        text, calls, thoughts = _split_parts(parts)
        message: dict[str, Any] = {"role": "assistant",
                                   "content": text if text or not calls else None}
        if thoughts:
            message["reasoning_content"] = thoughts
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                     for c in calls]
        choices.append({"index": cand.get("index", pos), "message": message, "logprobs": None,
                        "finish_reason": _finish(cand.get("finishReason"), bool(calls))
                        or "stop"})
    if not choices and (resp.get("promptFeedback") or {}).get("blockReason"):
        choices.append({"index": 0, "message": {"role": "assistant", "content": None},
                        "logprobs": None, "finish_reason": "content_filter"})
    out = {"id": resp.get("responseId") or base.new_id("chatcmpl-"),
           "object": "chat.completion", "created": base.now(),
           "model": resp.get("modelVersion") or model, "choices": choices}
    if isinstance(resp.get("usageMetadata"), dict):
        out["usage"] = gemini_usage(resp["usageMetadata"]).to_openai()
    return out


class GeminiStreamDecoder(base.SSEStreamDecoder):
    """``alt=sse`` stream of GenerateContentResponse objects -> canonical chunks.

    Gemini has no terminal event: ``done`` turns true once every candidate
    seen has a finishReason; usage (repeated, cumulative, on every event) is
    emitted once, by ``close``.
    """

    def __init__(self, model: str):
        super().__init__(model)
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls emitted
        self._open: set[int] = set()      # candidates without a finishReason yet

    def _flush_usage(self, out: list[dict[str, Any]]) -> None:
        if self.usage is not None and not self._usage_sent:
            self._usage_sent = True
            out.append(base.usage_chunk(self._id, self._created, self.model, self.usage))

    def _event(self, ev: Event, out: list[dict[str, Any]]) -> None:
        data = ev.data
        if not data.strip() or data.strip() == "[DONE]":
            return
        obj = base.loads(data.encode())
        if isinstance(obj, list) and len(obj) == 1:
            obj = obj[0]
        if not isinstance(obj, dict):
            raise ProviderProtocolError()
        if isinstance(obj.get("error"), dict):
            raise UpstreamStreamError(base.summarize_error(200, data.encode()), out)
        if not self._id:
            self._id = obj.get("responseId") or base.new_id("chatcmpl-")
            self._created = base.now()
        self.model = obj.get("modelVersion") or self.model
        if isinstance(obj.get("usageMetadata"), dict):
            self.usage = gemini_usage(obj["usageMetadata"])
        candidates = obj.get("candidates") or []
        if not candidates and (obj.get("promptFeedback") or {}).get("blockReason"):
            self.finish_reason = "content_filter"
            self.done = True
            out.append(base.chunk(self._id, self._created, self.model, 0,
                                  {"role": "assistant"}, "content_filter"))
            return
        for pos, cand in enumerate(candidates):
            idx = cand.get("index", pos)
            parts = (cand.get("content") or {}).get("parts") or []
            text, calls, thoughts = _split_parts(parts, self._calls.get(idx, 0))
            self._calls[idx] = self._calls.get(idx, 0) + len(calls)
            delta: dict[str, Any] = {}
            if idx not in self._started:
                self._started.add(idx)
                self._open.add(idx)
                delta["role"] = "assistant"
            if thoughts:
                delta["reasoning_content"] = thoughts
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = calls
            finish = _finish(cand.get("finishReason"), self._calls[idx] > 0)
            if finish:
                self.finish_reason = finish
                self._open.discard(idx)
            if delta or finish:
                out.append(base.chunk(self._id, self._created, self.model, idx, delta, finish))
        if self._started and not self._open:
            self.done = True


class GeminiAdapter:
    type = "gemini"

    def _root(self, provider: ProviderConfig) -> str:
        root = provider.base_url.rstrip("/")
        return root if base.has_version_path(root) else root + "/v1beta"

    def _model_url(self, model: str, provider: ProviderConfig, method: str) -> str:
        model = model.removeprefix("models/")
        return f"{self._root(provider)}/models/{quote(model, safe='.-_')}:{method}"

    def _headers(self, provider: ProviderConfig) -> dict[str, str]:
        return base.json_headers(
            provider, {"x-goog-api-key": provider.api_key} if provider.api_key else {})

    def chat_request(self, body: dict[str, Any], model: str, provider: ProviderConfig, *,
                     stream: bool) -> UpstreamRequest:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return UpstreamRequest("POST", self._model_url(model, provider, method),
                               self._headers(provider), base.dumps(to_gemini(body)))

    def chat_response(self, data: bytes, model: str) -> dict[str, Any]:
        resp = base.loads(data)
        if not isinstance(resp, dict) or not ("candidates" in resp or "promptFeedback" in resp):
            raise ProviderProtocolError()
        return from_gemini(resp, model)

    def chat_stream(self, model: str) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(model)

    def embeddings_request(self, body: dict[str, Any], model: str,
                           provider: ProviderConfig) -> UpstreamRequest:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise NotSupported("provider gemini embeds text input only", param="input")
        name = "models/" + model.removeprefix("models/")
        reqs = []
        for text in inputs:
            req: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if body.get("dimensions"):
                req["outputDimensionality"] = body["dimensions"]
            reqs.append(req)
        return UpstreamRequest("POST", self._model_url(model, provider, "batchEmbedContents"),
                               self._headers(provider), base.dumps({"requests": reqs}))

    def embeddings_response(self, data: bytes, model: str) -> dict[str, Any]:
        resp = base.loads_with_list(data, "embeddings")
        items = [{"object": "embedding", "index": i, "embedding": e.get("values", [])}
                 for i, e in enumerate(resp["embeddings"])]
        # batchEmbedContents reports no token usage: the relay counts
        return {"object": "list", "data": items, "model": model}

    def error_summary(self, status: int, data: bytes) -> str:
        return base.summarize_error(status, data)
