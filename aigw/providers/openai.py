"""OpenAI Chat Completions / Embeddings: the canonical format itself.

``OpenAIAdapter`` is also the base of the Azure, Mistral and OpenAI-compatible
adapters, which only change URLs, auth and a few request fields.
"""
from __future__ import annotations

from typing import Any

from aigw.providers import base
from aigw.providers.base import ProviderProtocolError, UpstreamStreamError
from aigw.sse import Event
from aigw.types import ProviderConfig, UpstreamRequest, Usage


def merge_usage(raw: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """Provider usage (OpenAI semantics) -> normalized dict keeping extra fields."""
    usage = Usage.from_openai(raw) or Usage()
    norm = usage.to_openai()
    out = {**raw, **norm}
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        extra = raw.get(key)
        if isinstance(extra, dict):
            out[key] = {**extra, **norm[key]}
    return out, usage


def _flatten_content(message: dict[str, Any]) -> None:
    """Some servers (Mistral reasoning models) answer content as a list of chunks."""
    content = message.get("content")
    if isinstance(content, list):
        message["content"] = base.text_of(content)


class OpenAIAdapter:
    """``base_url`` includes the version path (``https://api.openai.com/v1``);
    a bare origin gets ``/v1`` appended.  Unknown request fields are kept."""

    type = "openai"
    # where the relay puts the reserved output cap when the client set none
    # (aigw/relay/output_cap.py): OpenAI's current field, required by o-series models
    max_output_field = "max_completion_tokens"

    # -- requests ---------------------------------------------------------
    def chat_url(self, model: str, provider: ProviderConfig) -> str:
        return base.api_root(provider.base_url) + "/chat/completions"

    def embeddings_url(self, model: str, provider: ProviderConfig) -> str:
        return base.api_root(provider.base_url) + "/embeddings"

    def auth(self, provider: ProviderConfig) -> dict[str, str]:
        return {"authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}

    def chat_body(self, body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        out = dict(body)
        out["model"] = model
        if stream:
            out["stream"] = True
            opts = out.get("stream_options")
            out["stream_options"] = {**(opts if isinstance(opts, dict) else {}),
                                     "include_usage": True}
        else:
            out.pop("stream", None)
            out.pop("stream_options", None)
        return out

    def chat_request(self, body: dict[str, Any], model: str, provider: ProviderConfig, *,
                     stream: bool) -> UpstreamRequest:
        return UpstreamRequest(
            "POST", self.chat_url(model, provider),
            base.json_headers(provider, self.auth(provider)),
            base.dumps(self.chat_body(body, model, stream=stream)))

    def embeddings_body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return {**body, "model": model}

    def embeddings_request(self, body: dict[str, Any], model: str,
                           provider: ProviderConfig) -> UpstreamRequest:
        return UpstreamRequest(
            "POST", self.embeddings_url(model, provider),
            base.json_headers(provider, self.auth(provider)),
            base.dumps(self.embeddings_body(body, model)))

    # -- responses --------------------------------------------------------
    def chat_response(self, data: bytes, model: str) -> dict[str, Any]:
        resp = base.loads_with_list(data, "choices")
        resp.setdefault("object", "chat.completion")
        resp.setdefault("model", model)
        for choice in resp["choices"]:
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                _flatten_content(choice["message"])
        if isinstance(resp.get("usage"), dict):
            resp["usage"], _ = merge_usage(resp["usage"])
        return resp

    def chat_stream(self, model: str) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(model)

    def embeddings_response(self, data: bytes, model: str) -> dict[str, Any]:
        resp = base.loads_with_list(data, "data")
        resp.setdefault("object", "list")
        resp.setdefault("model", model)
        usage = resp.get("usage")
        if isinstance(usage, dict):
            prompt = int(usage.get("prompt_tokens", 0) or 0)
            resp["usage"] = {**usage, "prompt_tokens": prompt,
                             "total_tokens": int(usage.get("total_tokens", prompt) or prompt)}
        return resp

    def error_summary(self, status: int, data: bytes) -> str:
        return base.summarize_error(status, data)


class OpenAIStreamDecoder(base.SSEStreamDecoder):
    """OpenAI-style SSE (``data: {chunk}`` … ``data: [DONE]``) -> canonical chunks.

    Usage is taken off whatever chunk carries it (OpenAI: a last chunk with
    empty ``choices``; Mistral: the last content chunk) and emitted once, as
    its own chunk, when the stream ends.
    """

    def __init__(self, model: str):
        super().__init__(model)
        self._raw_usage: dict[str, Any] | None = None
        self._model = model  # as the provider names it in chunks; ``model`` stays as asked

    def _event(self, ev: Event, out: list[dict[str, Any]]) -> None:
        data = ev.data
        if self.done or not data.strip():
            return
        if data.strip() == "[DONE]":
            self.done = True
            self._flush_usage(out)
            return
        obj = base.loads(data.encode())
        if not isinstance(obj, dict):
            raise ProviderProtocolError()
        if isinstance(obj.get("error"), (dict, str)) and "choices" not in obj:
            raise UpstreamStreamError(base.summarize_error(200, data.encode()), out)
        self._id = obj.get("id") or self._id
        self._created = obj.get("created") or self._created
        self._model = obj.get("model") or self._model
        usage = obj.pop("usage", None)
        if isinstance(usage, dict):
            self._raw_usage = usage
            self.usage = Usage.from_openai(usage)
        choices = obj.get("choices")
        if choices is None:
            return  # not a chat chunk (e.g. a bare usage object): nothing to forward
        if not isinstance(choices, list):
            raise ProviderProtocolError()
        if not choices:
            return  # a usage-only chunk: re-emitted at the end
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), list):
                delta["content"] = base.text_of(delta["content"])
        obj.setdefault("object", "chat.completion.chunk")
        out.append(obj)

    def _flush_usage(self, out: list[dict[str, Any]]) -> None:
        if self._raw_usage is None or self._usage_sent:
            return
        self._usage_sent = True
        usage, _ = merge_usage(self._raw_usage)
        out.append({"id": self._id, "object": "chat.completion.chunk",
                    "created": self._created, "model": self._model,
                    "choices": [], "usage": usage})
