"""Google Vertex AI: an OAuth token endpoint, Gemini and Anthropic publisher models.

``POST /token`` is a service-account token endpoint (RFC 7523 JWT bearer
grant, what google-auth's service-account credentials call at ``token_uri``):
it reads the assertion's claims (unverified: the mock has no key registry),
requires ``iss``, ``aud`` and the cloud-platform ``scope``, and issues an
opaque ``ya29.mock-…`` token.  The model routes accept only tokens it issued.
"""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

import jwt

from . import anthropic_api, gemini_api
from .wire import Request, Response, Stream, json_response

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_LIFETIME = 3600


def token(req: Request) -> Response:
    form = dict(parse_qsl(req.raw_body.decode("utf-8", "replace"))) if req.raw_body else {}
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return json_response(400, {"error": "unsupported_grant_type"})
    try:
        claims = jwt.decode(form.get("assertion", ""), options={"verify_signature": False})
    except jwt.PyJWTError:
        return json_response(400, {"error": "invalid_grant", "error_description": "Invalid JWT"})
    now = time.time()
    if not claims.get("iss") or not claims.get("aud") or SCOPE not in str(claims.get("scope")) \
            or not (claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0)):
        return json_response(400, {"error": "invalid_grant",
                                   "error_description": "Invalid JWT claims"})
    value = f"ya29.mock-{req.next_id():08d}"
    req.state.issue(value, now + TOKEN_LIFETIME)
    return json_response(200, {"access_token": value, "expires_in": TOKEN_LIFETIME,
                               "token_type": "Bearer"})


def check_auth(req: Request, anthropic: bool) -> Response | None:
    if req.api_key is None:
        return None
    auth = req.headers.get("authorization", "")
    if auth.startswith("Bearer ") and req.state.token_valid(auth[7:]):
        return None
    msg = ("Request had invalid authentication credentials. Expected OAuth 2 access token, "
           "login cookie or other valid authentication credential.")
    return json_response(401, {"error": {"code": 401, "message": msg,
                                         "status": "UNAUTHENTICATED"}})


def predict(req: Request, publisher: str, model: str, method: str) -> Response | Stream:
    denied = check_auth(req, publisher == "anthropic")
    if denied:
        return denied
    if publisher == "google":
        if method not in ("generateContent", "streamGenerateContent"):
            return gemini_api.error(400, f"Method {method} is not supported for this model.")
        return gemini_api.generate(req, model, method == "streamGenerateContent")
    if method not in ("rawPredict", "streamRawPredict"):
        return anthropic_api.error(400, f"Method {method} is not supported for this model.")
    body = req.body
    if not isinstance(body, dict):
        return anthropic_api.error(400, "There was an issue with the JSON body of your request.")
    if body.get("anthropic_version") != "vertex-2023-10-16":
        return anthropic_api.error(400, "anthropic_version: Input should be 'vertex-2023-10-16'")
    if "model" in body:
        return anthropic_api.error(400, "model: Extra inputs are not permitted")
    if bool(body.get("stream")) != (method == "streamRawPredict"):
        return anthropic_api.error(400, "stream must be true exactly for streamRawPredict")
    inner: dict[str, Any] = dict(body, model=model)
    return anthropic_api.chat(Request(req.method, req.path, req.query, req.headers, inner,
                                      None, req.next_id, req.state, req.raw_body,
                                      req.raw_path))

