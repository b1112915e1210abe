"""Kong's bundled key-auth, jwt, acl and request-size-limiting plugins, re-implemented in Python.

- acl: kong/plugins/acl/handler.lua + groups.lua (priority 950): consumer ACL groups
  (``acls: [{group}]``), ``allow``/``deny``, ``hide_groups_header``; a passing request
  gets ``X-Consumer-Groups`` (set even when empty, so a client cannot forge it).

- key-auth: kong/plugins/key-auth/handler.lua + schema.lua (priority 1250).
- jwt: kong/plugins/jwt/handler.lua + schema.lua + jwt_parser.lua (priority 1450).
- request-size-limiting: kong/plugins/request-size-limiting/handler.lua (priority 951), minimal:
  only ``allowed_payload_size`` / ``size_unit`` / ``require_content_length``.

Both auth plugins call ``set_consumer`` as Kong's do: kong.client.authenticate plus the upstream
headers X-Consumer-ID, X-Consumer-Custom-ID, X-Consumer-Username, X-Credential-Identifier,
X-Anonymous-Consumer (kong/constants.lua HEADERS).
"""
from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from jwt.algorithms import get_default_algorithms

from .config import Config, Consumer, PluginInfo
from .pdk import (
    Req,
    _error,
    _exit,
    _get_body,
    _nginx_var,
    header_clear,
    header_get,
    header_set,
    multimap,
    query_multimap,
    serialize,
)

_str = {"type": "string"}
KEY_AUTH_FIELDS = [
    {"key_names": {"type": "array", "required": True, "elements": _str, "default": ["apikey"]}},
    {"hide_credentials": {"type": "boolean", "required": True, "default": False}},
    {"anonymous": {"type": "string"}},
    {"key_in_header": {"type": "boolean", "required": True, "default": True}},
    {"key_in_query": {"type": "boolean", "required": True, "default": True}},
    {"key_in_body": {"type": "boolean", "required": True, "default": False}},
    {"run_on_preflight": {"type": "boolean", "required": True, "default": True}},
    {"realm": {"type": "string", "required": False}},
]
JWT_FIELDS = [
    {"uri_param_names": {"type": "set", "elements": _str, "default": ["jwt"]}},
    {"cookie_names": {"type": "set", "elements": _str, "default": []}},
    {"key_claim_name": {"type": "string", "default": "iss"}},
    {"secret_is_base64": {"type": "boolean", "required": True, "default": False}},
    {"claims_to_verify": {"type": "set", "elements": {"type": "string", "one_of": ["exp", "nbf"]}}},
    {"anonymous": {"type": "string"}},
    {"run_on_preflight": {"type": "boolean", "required": True, "default": True}},
    {"maximum_expiration": {"type": "number", "default": 0, "between": [0, 31536000]}},
    {"header_names": {"type": "set", "elements": _str, "default": ["authorization"]}},
    {"realm": {"type": "string", "required": False}},
]
SIZE_FIELDS = [
    {"allowed_payload_size": {"type": "integer", "default": 128}},
    {"size_unit": {"type": "string", "required": True, "default": "megabytes",
                   "one_of": ["megabytes", "kilobytes", "bytes"]}},
    {"require_content_length": {"type": "boolean", "required": True, "default": False}},
]

ACL_FIELDS = [
    {"allow": {"type": "array", "elements": _str}},
    {"deny": {"type": "array", "elements": _str}},
    {"hide_groups_header": {"type": "boolean", "required": True, "default": False}},
    {"always_use_authenticated_groups": {"type": "boolean", "required": True, "default": False}},
    {"include_consumer_groups": {"type": "boolean", "required": False, "default": False}},
]

FILE_LOG_FIELDS = [
    {"path": {"type": "string", "required": True}},
    {"reopen": {"type": "boolean", "required": True, "default": False}},
]

BUNDLED = {
    # kong/plugins/file-log/handler.lua 3.9.1 (PRIORITY 9, log 70-82): appends
    # cjson(kong.log.serialize()) as a line, synchronously in the request's log phase
    "file-log": PluginInfo("file-log", 9, "3.9.1", FILE_LOG_FIELDS, ["log"], bundled=True),
    "jwt": PluginInfo("jwt", 1450, "3.9.1", JWT_FIELDS, ["access"], bundled=True),
    "key-auth": PluginInfo("key-auth", 1250, "3.9.1", KEY_AUTH_FIELDS, ["access"], bundled=True),
    "acl": PluginInfo("acl", 950, "3.9.1", ACL_FIELDS, ["access"], bundled=True),
    "request-size-limiting": PluginInfo("request-size-limiting", 951, "3.9.1", SIZE_FIELDS, ["access"],
                                        bundled=True),
}


class _Fail(Exception):
    def __init__(self, status: int, message: str | None, www: str | None = None,
                 errors: dict[str, Any] | None = None):
        self.status, self.message, self.www, self.errors = status, message, www, errors


def set_consumer(req: Req, consumer: Consumer | None, credential: dict[str, Any] | None,
                 identifier_field: str) -> None:
    """handler.lua set_consumer (key-auth identifies the credential by id, jwt by key)."""
    req.consumer, req.credential = consumer, credential
    h = req.headers
    for name, value in (("X-Consumer-ID", consumer and consumer.id),
                        ("X-Consumer-Custom-ID", consumer and consumer.custom_id),
                        ("X-Consumer-Username", consumer and consumer.username),
                        ("X-Credential-Identifier", credential and credential.get(identifier_field))):
        if value:
            header_set(h, name, value)
        else:
            header_clear(h, name)
    if credential:
        header_clear(h, "X-Anonymous-Consumer")
    else:
        header_set(h, "X-Anonymous-Consumer", "true")


def _anonymous(req: Req, cfg: Config, anonymous: str, identifier_field: str) -> None:
    consumer = cfg.consumer(anonymous)
    if consumer is None:
        # Kong: kong.cache:get(...load_consumer...) yields no consumer -> error() -> 500
        raise _Fail(500, "An unexpected error occurred")
    set_consumer(req, consumer, None, identifier_field)


def _run_auth(req: Req, cfg: Config, conf: dict[str, Any], do_auth: Any, identifier: str, as_error: bool) -> None:
    if not conf["run_on_preflight"] and req.method == "OPTIONS":
        return
    if conf.get("anonymous"):
        # logical OR: already authenticated by another plugin -> nothing to do
        if req.credential:
            return
        try:
            do_auth(req, cfg, conf)
        except _Fail:
            try:
                _anonymous(req, cfg, conf["anonymous"], identifier)
            except _Fail as f:
                _error(req, f.status, f.message)
        return
    try:
        do_auth(req, cfg, conf)
    except _Fail as f:
        headers = {"WWW-Authenticate": f.www} if f.www else None
        if as_error:  # key-auth: kong.response.error(status, message, headers)
            _error(req, f.status, f.message, headers)
        # jwt: kong.response.exit(status, err.errors or {message = err.message}, headers)
        _exit(req, f.status, f.errors or {"message": f.message}, headers)


def _key_auth(req: Req, cfg: Config, conf: dict[str, Any]) -> None:
    www = f'Key realm="{conf["realm"]}"' if conf.get("realm") else "Key"
    headers, query = multimap(req.headers), query_multimap(req.query)
    body: dict[str, Any] | None = None
    key = None
    for name in conf["key_names"]:
        v: Any = None
        if conf["key_in_header"]:
            v = headers.get(name.lower().replace("_", "-"))
        if v is None and conf["key_in_query"]:
            v = query.get(name)
            if v == []:
                v = None  # a flag arg is `true`, not a string
        if v is None and conf["key_in_body"]:
            body = body if body is not None else _body(req)
            v = body.get(name)
            v = [v] if isinstance(v, str) else v
        if isinstance(v, list) and len(v) > 1:
            raise _Fail(401, "Duplicate API key found", www)
        if isinstance(v, list) and v and isinstance(v[0], str):
            key = v[0]
            if conf["hide_credentials"]:
                req.query = urlencode([(k, x) for k, x in parse_qsl(req.query, keep_blank_values=True) if k != name])
                header_clear(req.headers, name)
                if conf["key_in_body"]:
                    body = body if body is not None else _body(req)
                    if body:
                        body.pop(name, None)
                        req.body = orjson.dumps(body)
            break
    if not key:
        raise _Fail(401, "No API key found in request", www)
    cred = cfg.credential("keyauth_credentials", key)
    if cred is None:
        raise _Fail(401, "Unauthorized", www)
    set_consumer(req, cred.consumer, cred.entity, "id")


def _body(req: Req) -> dict[str, Any]:
    b = _get_body(req)
    return b if isinstance(b, dict) else {}


# ---------------------------------------------------------------- jwt

_BEARER = re.compile(r"\s*[Bb]earer\s+(.+)")


def _b64(s: str) -> bytes:
    """jwt_parser.lua base64_decode: url-safe alphabet, padding optional."""
    s = s.replace("-", "+").replace("_", "/")
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=False)


def _tokens(req: Req, conf: dict[str, Any]) -> list[str]:
    found: list[str] = []
    args = query_multimap(req.query)
    for name in conf["uri_param_names"]:
        for t in args.get(name, []):
            if t and t not in found:
                found.append(t)
    for name in conf["cookie_names"]:
        c = _nginx_var(req, "cookie_" + name)
        if c and c not in found:
            found.append(c)
    headers = multimap(req.headers)
    for name in conf["header_names"]:
        vals = headers.get(name.lower())
        if vals:
            m = _BEARER.match(vals[0])
            if m and m.group(1) and m.group(1) not in found:
                found.append(m.group(1))
    return found


_ALGS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384",
         "PS512", "EdDSA", "ESB256", "ESB320", "ESB384", "ESB512"}


def _jwt(req: Req, cfg: Config, conf: dict[str, Any]) -> None:
    base = f'Bearer realm="{conf["realm"]}"' if conf.get("realm") else "Bearer"
    www = base + ' error="invalid_token"'
    tokens = _tokens(req, conf)
    if not tokens:
        raise _Fail(401, "Unauthorized", base)
    if len(tokens) > 1:
        raise _Fail(401, "Multiple tokens provided", www)
    token = tokens[0]
    parts = (token.split(".", 2) + ["", ""])[:3]
    try:
        header = orjson.loads(_b64(parts[0]))
        claims = orjson.loads(_b64(parts[1]))
        signature = _b64(parts[2])
    except (ValueError, binascii.Error):
        raise _Fail(401, "Bad token; invalid JSON", www) from None
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str) or header["alg"] not in _ALGS:
        raise _Fail(401, "Bad token; invalid alg", www)
    if not isinstance(claims, dict):
        raise _Fail(401, "Bad token; invalid claims", www)
    claim = conf["key_claim_name"]
    key = claims.get(claim, header.get(claim))
    if key is None:
        raise _Fail(401, f"No mandatory '{claim}' in claims", www)
    if key == "":
        raise _Fail(401, f"Invalid '{claim}' in claims", www)
    cred = cfg.credential("jwt_secrets", str(key))
    if cred is None:
        raise _Fail(401, f"No credentials found for given '{claim}'", www)
    algorithm = cred.entity.get("algorithm") or "HS256"
    if header["alg"] != algorithm:
        raise _Fail(401, "Invalid algorithm", www)
    if algorithm.startswith("HS"):
        secret = cred.entity.get("secret")
        if secret is not None and conf["secret_is_base64"]:
            secret = _b64(secret)
    else:
        secret = cred.entity.get("rsa_public_key")
    if not secret:
        raise _Fail(401, "Invalid key/secret", www)
    if not _verify(algorithm, f"{parts[0]}.{parts[1]}".encode(), signature, secret):
        raise _Fail(401, "Invalid signature", www)
    errors: dict[str, Any] = {}
    now = time.time()
    for name in conf.get("claims_to_verify") or []:
        v = claims.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errors[name] = "must be a number"
        elif name == "nbf" and v > now:
            errors[name] = "token not valid yet"
        elif name == "exp" and v <= now:
            errors[name] = "token expired"
    if errors:
        raise _Fail(401, None, www, errors)
    maximum = conf.get("maximum_expiration") or 0
    if maximum > 0:
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp - now > maximum:
            raise _Fail(401, None, www, {"exp": "exceeds maximum allowed expiration"})
    consumer = next((c for c in cfg.consumers if c.id == cred.consumer.id), None)
    if consumer is None:
        raise _Fail(401, f"Could not find consumer for '{claim}={key}'")
    set_consumer(req, consumer, cred.entity, "key")
    req.ctx_shared["authenticated_jwt_token"] = token


def _verify(alg: str, signing_input: bytes, signature: bytes, secret: str | bytes) -> bool:
    """Signature check through PyJWT's algorithm objects (jwt_parser.lua alg_verify)."""
    algo = get_default_algorithms().get(alg)
    if algo is None:
        return False
    try:
        key = algo.prepare_key(secret.encode() if isinstance(secret, str) and alg.startswith("HS") else secret)
        return bool(algo.verify(signing_input, key, signature))
    except Exception:
        return False


# ---------------------------------------------------------------- request-size-limiting

_UNITS = {"megabytes": 2 ** 20, "kilobytes": 2 ** 10, "bytes": 1}


def _size_limit(req: Req, cfg: Config, conf: dict[str, Any]) -> None:
    allowed = conf["allowed_payload_size"] * _UNITS[conf["size_unit"]]
    cl = header_get(req.headers, "content-length")
    if cl is None and conf["require_content_length"]:
        _exit(req, 411, {"message": "A valid Content-Length header is required"})
    if (cl and cl.isdigit() and int(cl) > allowed) or len(req.body) > allowed:
        _exit(req, 413, {"message": "Request size limit exceeded"})


# ---------------------------------------------------------------- acl

def _acl(req: Req, cfg: Config, conf: dict[str, Any]) -> None:
    """kong/plugins/acl/handler.lua (consumer path; authenticated_groups are not modelled)."""
    allow, deny = conf.get("allow") or [], conf.get("deny") or []
    if allow and deny:
        _error(req, 500, "An unexpected error occurred")
    consumer = req.consumer
    if consumer is None:
        if req.credential:
            _error(req, 403, "You cannot consume this service")
        _error(req, 401)
    groups = list(consumer.acls)
    if not groups and not deny:
        _error(req, 403 if req.credential else 401,
               "You cannot consume this service" if req.credential else None)
    in_group = any(g in groups for g in (allow or deny))
    if (allow and not in_group) or (deny and in_group):
        _error(req, 403, "You cannot consume this service")
    if not conf.get("hide_groups_header"):
        header_set(req.headers, "X-Consumer-Groups", ", ".join(groups))


def run_log(name: str, req: Req, conf: dict[str, Any]) -> None:
    """Run a bundled plugin's log handler (in the request's log phase, before any external
    plugin's log event, which Kong defers to a timer)."""
    if name == "file-log":
        line = orjson.dumps(serialize(req)) + b"\n"
        with open(conf["path"], "ab") as f:
            f.write(line)


def run(name: str, req: Req, cfg: Config, conf: dict[str, Any]) -> None:
    """Run a bundled plugin's access handler; raises pdk.Exit when it ends the request."""
    if name == "key-auth":
        _run_auth(req, cfg, conf, _key_auth, "id", as_error=True)
    elif name == "jwt":
        _run_auth(req, cfg, conf, _jwt, "key", as_error=False)
    elif name == "acl":
        _acl(req, cfg, conf)
    elif name == "request-size-limiting":
        _size_limit(req, cfg, conf)
