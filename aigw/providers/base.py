"""The adapter interface, its errors, and helpers shared by the adapters.

An adapter turns a canonical request (OpenAI Chat Completions / Embeddings)
into one provider request, and the provider's answer back into the canonical
shape.  Adapters are pure: no I/O, no clock except :func:`now`, no logging.
"""
from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from aigw.errors import GatewayError
from aigw.sse import Event, SSEDecoder
from aigw.types import ProviderConfig, UpstreamRequest, Usage

__all__ = [
    "Adapter", "StreamDecoder", "SSEStreamDecoder", "ProviderProtocolError",
    "UpstreamStreamError", "NotSupported", "now", "new_id", "loads", "loads_with_list",
    "dumps", "summarize_error", "parse_data_url", "bad_request", "image_url", "content_parts",
    "function_tools", "conversation", "json_headers", "chunk", "usage_chunk", "has_version_path",
    "api_root",
]


class Adapter(Protocol):
    type: str

    def chat_request(self, body: dict[str, Any], model: str, provider: ProviderConfig, *,
                     stream: bool) -> UpstreamRequest: ...

    def chat_response(self, data: bytes, model: str) -> dict[str, Any]: ...

    def chat_stream(self, model: str) -> StreamDecoder: ...

    def embeddings_request(self, body: dict[str, Any], model: str,
                           provider: ProviderConfig) -> UpstreamRequest: ...

    def embeddings_response(self, data: bytes, model: str) -> dict[str, Any]: ...

    def error_summary(self, status: int, data: bytes) -> str: ...


class StreamDecoder(Protocol):
    usage: Usage | None
    finish_reason: str | None
    done: bool

    def feed(self, chunk: bytes) -> list[dict[str, Any]]: ...

    def close(self) -> list[dict[str, Any]]: ...


class SSEStreamDecoder:
    """A :class:`StreamDecoder` over an SSE body: subclasses turn one event into
    canonical chunks (``_event``) and emit the held-back usage chunk (``_flush_usage``)."""

    def __init__(self, model: str):
        self.model = model
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False
        self._sse = SSEDecoder()
        self._id = ""
        self._created = 0
        self._usage_sent = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ev in self._sse.feed(chunk):
            self._event(ev, out)
        return out

    def close(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ev in self._sse.close():
            self._event(ev, out)
        self._flush_usage(out)
        return out

    def _event(self, ev: Event, out: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _flush_usage(self, out: list[dict[str, Any]]) -> None:
        raise NotImplementedError


# -- errors ---------------------------------------------------------------

class ProviderProtocolError(GatewayError):
    """The provider answered 2xx with a body we cannot understand (-> 502)."""

    def __init__(self, message: str = "invalid response from provider"):
        super().__init__(502, message, code="provider_protocol_error")


class UpstreamStreamError(GatewayError):
    """The provider sent an error event inside a stream (-> 502).

    ``chunks`` holds the canonical chunks decoded in the same ``feed`` call
    before the error event, so the relay can still forward them.
    """

    def __init__(self, message: str, chunks: list[dict[str, Any]] | None = None):
        super().__init__(502, message, code="provider_stream_error")
        self.chunks = list(chunks or [])


class NotSupported(GatewayError):
    """The provider has no equivalent for this request (-> 400)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(400, message, code="not_supported", param=param)


# -- small helpers ---------------------------------------------------------

def now() -> int:
    """Unix seconds for ``created`` (tests replace this)."""
    return int(time.time())


def new_id(prefix: str) -> str:
    """A fresh opaque id such as ``chatcmpl-…`` or ``call_…`` (tests replace this)."""
    return prefix + secrets.token_hex(12)


def loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderProtocolError() from None


def loads_with_list(data: bytes, key: str) -> dict[str, Any]:
    """A provider response: a JSON object whose ``key`` holds a list, else a protocol error."""
    resp = loads(data)
    if not isinstance(resp, dict) or not isinstance(resp.get(key), list):
        raise ProviderProtocolError()
    return resp


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def json_headers(provider: ProviderConfig, auth: dict[str, str]) -> dict[str, str]:
    """Static provider headers, then content type and auth (which always win)."""
    headers = {k.lower(): v for k, v in provider.headers.items()}
    headers["content-type"] = "application/json"
    headers.update(auth)
    return headers


_VERSION_TAIL = re.compile(r"/v\d+[a-z0-9]*$")


def has_version_path(base_url: str) -> bool:
    """True when ``base_url``'s path ends with a version segment (/v1, /v1beta…)."""
    return bool(_VERSION_TAIL.search(urlsplit(base_url).path.rstrip("/")))


def api_root(base_url: str, version: str = "/v1") -> str:
    """``base_url`` without a trailing slash; a bare origin gets ``version`` appended.

    ``http://vllm:8000`` -> ``http://vllm:8000/v1``; ``http://vllm:8000/v1`` and
    custom paths such as ``https://api.groq.com/openai/v1`` are kept as given.
    """
    root = base_url.rstrip("/")
    if urlsplit(root).path in ("", "/"):
        root += version
    return root


_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*);base64,(.*)$", re.S)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> ("image/png", "AAAA"); None if not base64 data."""
    m = _DATA_URL.match(url)
    if not m:
        return None
    return m.group(1) or "application/octet-stream", m.group(3)


def text_of(content: Any) -> str:
    """Text of an OpenAI message ``content`` (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") in ("text", None))
    return ""


# -- translating canonical requests ------------------------------------------

def bad_request(message: str, param: str = "messages") -> GatewayError:
    """A request this adapter cannot translate (-> 400 invalid_request)."""
    return GatewayError(400, message, code="invalid_request", param=param)


def image_url(part: dict[str, Any]) -> str:
    """The URL of an OpenAI ``image_url`` content part."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_request("image_url part without a url")
    return url


def content_parts(content: Any, text: Callable[[str], dict[str, Any]],
                  image: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI message content -> provider parts made by ``text`` and ``image``.

    Empty text is dropped; parts other than text and image_url are rejected."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text(content)] if content else []
    if not isinstance(content, list):
        raise bad_request("message content must be a string or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append(text(part["text"]))
        elif kind == "image_url":
            parts.append(image(part))
        else:
            raise bad_request("only text and image_url content parts are supported by this provider")
    return parts


def function_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """The ``function`` objects of OpenAI ``tools``; any other kind of tool is rejected."""
    fns = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict):
            raise bad_request("only function tools are supported", "tools")
        fns.append(fn)
    return fns


def conversation(messages: list[Any], key: str,
                 turn: Callable[[dict[str, Any]], tuple[str, list[dict[str, Any]]]]
                 ) -> tuple[list[str], list[dict[str, Any]]]:
    """Split system/developer text off; ``turn`` maps every other message to
    (role, items), and consecutive items of one role merge into one
    ``{"role": role, key: items}`` turn (messages with no items are dropped)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in messages:
        if msg.get("role") in ("system", "developer"):
            text = text_of(msg.get("content"))
            if text:
                system.append(text)
            continue
        role, items = turn(msg)
        if not items:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1][key].extend(items)
        else:
            turns.append({"role": role, key: list(items)})
    return system, turns


# -- canonical chunks ------------------------------------------------------------

def chunk(id_: str, created: int, model: str, index: int, delta: dict[str, Any],
          finish_reason: str | None = None) -> dict[str, Any]:
    """One canonical ``chat.completion.chunk`` with a single choice."""
    return {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]}


def usage_chunk(id_: str, created: int, model: str, usage: Usage) -> dict[str, Any]:
    return {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage.to_openai()}


# -- error summaries ------------------------------------------------------

_URL = re.compile(r"\b(?:https?|wss?)://\S+", re.I)
_SECRETS = [
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_*\-]{6,}"),     # OpenAI / Anthropic style keys
    re.compile(r"\bAIza[0-9A-Za-z_\-]{10,}"),                # Google API keys
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),              # AWS access key ids
    re.compile(r"\bya29\.[0-9A-Za-z_\-.]+"),                  # Google OAuth access tokens
    re.compile(r"(?i)\b(bearer)(\s+)[^\s<]+"),
    re.compile(r"(?i)\b(api[-_]?key|key|token|secret|password)(\s*[:=]\s*)[^\s<]+"),
    re.compile(r"\b[A-Za-z0-9_\-]{32,}\b"),                  # long opaque tokens
]


def scrub(text: str, limit: int = 200) -> str:
    """Remove URLs and anything that looks like a credential; cap the length."""
    text = _URL.sub("<url>", text)
    for pat in _SECRETS:
        if pat.groups == 2:
            text = pat.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
        else:
            text = pat.sub("<redacted>", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message_of(obj: Any) -> str | None:
    if isinstance(obj, list) and obj:
        return _message_of(obj[0])  # Gemini sometimes wraps the error in a list
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str) and msg:
            return msg
        for key in ("type", "status", "code"):
            name = err.get(key)
            if isinstance(name, str):
                return name
    if isinstance(err, str) and err:
        return err
    message = obj.get("message")
    if isinstance(message, str):
        return message
    detail = obj.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # pydantic-style: name the fields, never echo "input"
        parts = []
        for d in detail[:3]:
            if isinstance(d, dict):
                loc = ".".join(str(x) for x in d.get("loc", []) if x != "body")
                parts.append(f"{loc}: {d.get('msg', 'invalid')}" if loc else str(d.get("msg")))
        return "; ".join(parts) or None
    return None


def summarize_error(status: int, data: bytes) -> str:
    """Short, credential-free message from a provider error body."""
    try:
        msg = _message_of(orjson.loads(data)) if data else None
    except orjson.JSONDecodeError:
        msg = None
    return scrub(msg) if msg else f"provider returned HTTP {status}"


# -- errors the request caused ------------------------------------------------

# 4xx statuses a provider answers because of the request itself (the client can fix it);
# 401/403/407 are about the gateway's own provider credentials, 429 is the provider's load
_REQUEST_STATUSES = frozenset({400, 404, 409, 413, 415, 422})
# error type / code / status strings providers use for validation errors
# (OpenAI, Anthropic, Gemini INVALID_ARGUMENT / FAILED_PRECONDITION, llama.cpp, vLLM, pydantic)
_VALIDATION_NAMES = frozenset({
    "invalid_request_error", "invalid_request", "invalid_argument", "failed_precondition",
    "exceed_context_size_error", "context_length_exceeded", "badrequest", "badrequesterror",
    "bad_request", "validation_error", "request_too_large", "string_above_max_length",
})


def _error_object(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, list) and obj:
        obj = obj[0]
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        return err
    return obj if ("message" in obj or "code" in obj) and "choices" not in obj else None


def _validation_status(err: dict[str, Any]) -> int | None:
    """The 4xx an error object names (``code: 400``), or 400 for a validation type."""
    for key in ("code", "status"):
        v = err.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v in _REQUEST_STATUSES:
            return v
        if isinstance(v, str) and v.isdigit() and int(v) in _REQUEST_STATUSES:
            return int(v)
    for key in ("type", "code", "status"):
        v = err.get(key)
        if isinstance(v, str) and v.lower() in _VALIDATION_NAMES:
            return 413 if v.lower() == "request_too_large" else 400
    return None


def request_error_status(status: int, data: bytes) -> int | None:
    """When a provider's error answer was caused by the request itself, the 4xx status to
    relay to the client; None when the fault is the provider's or the gateway's.

    A 4xx of :data:`_REQUEST_STATUSES` is relayed as it is.  A 5xx counts as the
    request's fault only when its body says so unambiguously: an error object whose
    ``code``/``status`` is one of those 4xx, or whose ``type``/``code``/``status`` is a
    validation error name (e.g. a server that answers 500 ``invalid_request_error``)."""
    if status in _REQUEST_STATUSES:
        return status
    if status < 500 or not data:
        return None
    try:
        err = _error_object(orjson.loads(data))
    except orjson.JSONDecodeError:
        return None
    return _validation_status(err) if err is not None else None


def stream_error(head: bytes) -> tuple[int, str] | None:
    """An error a provider put in a 200 stream before any output: ``data: {"error": …}``
    (OpenAI-style) or llama.cpp's ``error: {…}`` SSE line (a field SSE clients ignore).
    Returns (status to relay, message); status is the request's 4xx when the error object
    names one, else 502."""
    for line in head.splitlines():
        name, _, value = line.partition(b":")
        if name.strip() not in (b"data", b"error") or not value.strip().startswith(b"{"):
            continue
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        err = _error_object(obj) if name.strip() == b"data" else (_error_object(obj) or obj)
        if not isinstance(err, dict) or (name.strip() == b"data" and "error" not in obj):
            continue
        status = _validation_status(err) or 502
        msg = err.get("message")
        return status, scrub(msg) if isinstance(msg, str) and msg else f"provider stream error ({status})"
    return None
