"""Errors in the client API's own format.

OpenAI routes answer ``{"error": {"message", "type", "code", "param"}}``;
the Anthropic Messages route answers ``{"type": "error", "error": {"type", "message"}}``.
Messages never carry prompt content, credentials or internal URLs.
"""
from __future__ import annotations

from typing import Any

import orjson

# API families the gateway speaks to clients
OPENAI = "openai"
ANTHROPIC = "anthropic"

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# every error type Anthropic's API documents (docs.claude.com/en/api/errors, the SDKs'
# ErrorType); "other 4XX status codes" are invalid_request_error there
ANTHROPIC_ERROR_TYPES = frozenset({
    "invalid_request_error", "authentication_error", "billing_error", "permission_error",
    "not_found_error", "request_too_large", "rate_limit_error", "api_error", "timeout_error",
    "overloaded_error"})

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class GatewayError(Exception):
    """An error the gateway answers to the client itself."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None, param: str | None = None,
                 type_: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_
        self.headers = dict(headers or {})

    def body(self, api: str = OPENAI) -> dict[str, Any]:
        return error_body(api, self.status, self.message, self.code, self.param, self.type)

    def encode(self, api: str = OPENAI) -> bytes:
        return orjson.dumps(self.body(api))


def anthropic_type(status: int, type_: str | None = None) -> str:
    """The Anthropic error type for a status; an OpenAI-style ``type_`` (``tokens``,
    ``insufficient_quota``, ...) is replaced by the type of its status."""
    if type_ in ANTHROPIC_ERROR_TYPES:
        return type_
    return _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if 400 <= status < 500 else "api_error")


def error_body(api: str, status: int, message: str, code: str | None = None,
               param: str | None = None, type_: str | None = None) -> dict[str, Any]:
    if api == ANTHROPIC:
        return {"type": "error",
                "error": {"type": anthropic_type(status, type_), "message": message}}
    default = _OPENAI_TYPES.get(status) or ("invalid_request_error" if 400 <= status < 500 else "server_error")
    return {"error": {"message": message,
                      "type": type_ or default,
                      "param": param,
                      "code": code}}
