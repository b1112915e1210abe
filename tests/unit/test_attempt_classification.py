"""Issue 13: which provider errors the request caused, and Anthropic error types."""
from __future__ import annotations

import pytest

from aigw.errors import ANTHROPIC, OPENAI, error_body
from aigw.providers.base import request_error_status, stream_error


@pytest.mark.parametrize("status,body,expect", [
    (400, b"", 400), (422, b'{"detail": []}', 422), (413, b"", 413), (404, b"", 404),
    (401, b"", None), (403, b"", None), (429, b"", None),
    (500, b'{"error": {"message": "bad", "type": "invalid_request_error"}}', 400),
    (500, b'{"error": {"code": 400, "message": "the request exceeds the context"}}', 400),
    (500, b'{"error": {"code": "422", "message": "x"}}', 422),
    (400, b'{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}', 400),
    (500, b'[{"error": {"code": 400, "message": "x", "status": "INVALID_ARGUMENT"}}]', 400),
    (503, b'{"error": {"code": 413, "type": "request_too_large"}}', 413),
    (500, b'{"error": {"message": "boom", "type": "server_error"}}', None),
    (500, b'{"error": {"code": 500}}', None), (502, b"<html>bad gateway</html>", None),
    (500, b"", None), (503, b'{"error": {"code": 503, "type": "overloaded_error"}}', None),
])
def test_request_error_status(status, body, expect):
    assert request_error_status(status, body) == expect


def test_stream_error_lines():
    llama = (b'error: {"code":400,"message":"the request exceeds the available context size, try increasing it",'
             b'"type":"exceed_context_size_error"}\n\n')
    assert stream_error(llama) == (400, "the request exceeds the available context size, try increasing it")
    assert stream_error(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n') == (502, "overloaded")
    assert stream_error(b'data: {"id": "x", "choices": []}\n\ndata: [DONE]\n\n') is None
    assert stream_error(b"") is None
    # credentials in a provider message are scrubbed
    _, msg = stream_error(b'error: {"code": 400, "message": "bad key sk-abcdefghijklmnop"}\n')
    assert "sk-abc" not in msg


@pytest.mark.parametrize("status,type_,expect", [
    (429, "tokens", "rate_limit_error"), (429, "insufficient_quota", "rate_limit_error"),
    (400, None, "invalid_request_error"), (422, None, "invalid_request_error"),
    (409, None, "invalid_request_error"), (401, None, "authentication_error"),
    (403, None, "permission_error"), (404, None, "not_found_error"), (413, None, "request_too_large"),
    (500, None, "api_error"), (502, None, "api_error"), (503, None, "overloaded_error"),
    (529, None, "overloaded_error"), (504, None, "timeout_error"), (402, None, "billing_error"),
    (400, "invalid_request_error", "invalid_request_error"),
])
def test_anthropic_error_types(status, type_, expect):
    assert error_body(ANTHROPIC, status, "m", "code", type_=type_)["error"]["type"] == expect


def test_openai_error_types_keep_the_given_type_and_default_4xx_to_invalid_request():
    assert error_body(OPENAI, 429, "m", type_="tokens")["error"]["type"] == "tokens"
    assert error_body(OPENAI, 422, "m")["error"]["type"] == "invalid_request_error"
    assert error_body(OPENAI, 502, "m")["error"]["type"] == "server_error"
