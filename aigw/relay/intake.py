"""The relay's intake: a request arrives from Kong, and the request side of its pipeline runs.

Kong runs ai-router's access, which issues the ticket (aigw/plugin_base.py issue_ticket), and
the other AI plugins' access events, which do no PDK call; then it proxies the request, body
and headers as the client sent them plus what Kong's own plugins set (auth's X-Consumer-*,
acl's X-Consumer-Groups), to the relay. Here the relay reads them from the proxied request,
finds the instance of each AI plugin that Kong ran for this request (aigw/instances.py) and
runs their request sides in Kong's priority order.

Reading the body here instead of with ``kong.request.get_raw_body`` also removes a limit of
real Kong: that call returns nothing for a body Kong buffered to a file, i.e. one larger than
``client_body_buffer_size`` (kong/pdk/request.lua 3.9.1 get_raw_body).
"""
from __future__ import annotations

from typing import Any

from ..context import TICKET_HEADER, RequestContext
from ..errors import GatewayError
from ..gateway.router import refuse_anonymous
from ..instances import REGISTRY, Instance

# The path the client asked for: Kong sets X-Forwarded-Path to the request's path (the raw
# request URI without its query) unless the client is a trusted IP that sent its own
# (kong/runloop/handler.lua 3.9.1, 1234-1253 and 1352), whatever the route's strip_path or
# the service's path make of the upstream path.
_PATH_HEADER = "x-forwarded-path"

# a body is read up to this size at most (the router's max_body_bytes decides below it)
_READ_LIMIT = 64 * 1024 * 1024


_API_BY_SUFFIX = (
    ("/chat/completions", "chat"),
    ("/embeddings", "embeddings"),
    ("/models", "models"),
    ("/responses", "responses"),
    ("/messages/count_tokens", "count_tokens"),
    ("/messages", "anthropic"),
)


def api_for_path(path: str) -> str | None:
    p = path.rstrip("/")
    for suffix, api in _API_BY_SUFFIX:
        if p.endswith(suffix):
            return api
    return None


def acl_groups(headers: dict[str, str]) -> list[str]:
    """The consumer's groups as Kong's acl plugin (priority 950, before ours) set them in
    ``X-Consumer-Groups`` (kong/plugins/acl/handler.lua). Kong OSS has no consumer-groups
    PDK; the acl plugin overwrites this header on every request it lets through, so
    enable acl wherever a config uses groups (aigw-validate checks it)."""
    raw = headers.get("x-consumer-groups") or ""
    return [g.strip() for g in raw.split(",") if g.strip()]


def request_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The proxied request's headers, lower-cased, first value of each (WSGI joins repeats)."""
    out: dict[str, str] = {}
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            out[k[5:].replace("_", "-").lower()] = v
    if environ.get("CONTENT_TYPE"):
        out["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        out["content-length"] = environ["CONTENT_LENGTH"]
    out.pop(TICKET_HEADER, None)
    return out


def read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` (the rest is read and dropped)."""
    inp = environ.get("wsgi.input")
    if inp is None:
        return b""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif parts:
            parts.clear()
    return b"".join(parts) if size <= limit else None


def stages_for(ctx: RequestContext) -> list[Instance]:
    """The AI plugin instances Kong ran for this request, in the pipeline's order."""
    anchor: Instance = ctx.anchor
    consumer_id = (ctx.consumer or {}).get("id") if ctx.consumer else None
    others = [n for n in REGISTRY.names() if n != anchor.name]
    found = REGISTRY.pipeline(others, ctx.route_id, ctx.service_id, consumer_id)
    return sorted([anchor, *found], key=lambda i: -i.order)


def admit(ctx: RequestContext, environ: dict[str, Any]) -> None:
    """Fill the context from the proxied request and run the request side of every stage.

    Raises GatewayError (answered in the client's API format) or Respond (an answer that
    needs no provider: a cache hit is not one, the relay replays it)."""
    headers = request_headers(environ)
    path = headers.get(_PATH_HEADER) or environ.get("PATH_INFO") or "/"
    ctx.headers, ctx.path = headers, path
    ctx.groups = acl_groups(headers)
    api = api_for_path(path)
    router = ctx.anchor.plugin.rt
    if api is None:
        read_body(environ, 0)
        raise GatewayError(404, "Unknown AI endpoint: the route must end in /chat/completions, "
                                "/embeddings, /models, /responses, /messages or /messages/count_tokens.",
                           code="unknown_endpoint")
    ctx.api = api
    # authentication is decided before content (a refused anonymous request never gets a 400)
    refuse_anonymous(ctx, allowed=router.allow_anonymous)
    if api == "models":
        read_body(environ, 0)  # a GET: any body is read and dropped
        raw: bytes | None = b""
    else:
        raw = read_body(environ, min(router.max_body, _READ_LIMIT))
    if raw is None:
        raise GatewayError(413, f"The request body exceeds the limit of {router.max_body} bytes.",
                           code="request_too_large")
    ctx.raw_body = raw or b""
    for inst in stages_for(ctx):
        name = inst.name
        ctx.pending.add(name)  # cleared only when this plugin's decision is complete
        inst.plugin.on_access(None, ctx)
        ctx.pending.discard(name)
        ctx.done.add(name)
