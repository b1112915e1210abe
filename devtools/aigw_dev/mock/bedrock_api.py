"""AWS Bedrock Runtime ``Converse`` / ``ConverseStream``, SigV4-checked.

Auth: with an expected key set, a request must carry either
``Authorization: Bearer <key>`` (a Bedrock API key) or an AWS Signature V4
for service ``bedrock`` whose secret access key is the mock's key (any access
key id).  The signature is recomputed with botocore over the headers the
request says it signed, so a request changed after signing fails like on AWS
(403 ``InvalidSignatureException``).
"""
from __future__ import annotations

import datetime
import re
from typing import Any

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .behaviour import (
    CACHE_WRITE,
    CUT_AFTER,
    TOOL_ARGS,
    TOOL_ARGS_JSON,
    Counts,
    Faults,
    Prompt,
    Reply,
    chunks,
    count,
    parse_faults,
    plan_reply,
    string_values,
    words,
)
from .eventstream import event
from .wire import Request, Response, Stream, fault_response, json_response, stream_for

EVENTSTREAM = "application/vnd.amazon.eventstream"
_ERROR_TYPES = {400: "ValidationException", 403: "AccessDeniedException",
                404: "ResourceNotFoundException", 429: "ThrottlingException",
                500: "InternalServerException", 503: "ServiceUnavailableException",
                504: "ModelTimeoutException"}
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([a-z0-9;\-]+), Signature=([0-9a-f]{64})$")
MAX_SKEW = datetime.timedelta(minutes=15)


def error(status: int, message: str, type_: str | None = None) -> Response:
    headers = {"x-amzn-ErrorType": type_ or _ERROR_TYPES.get(status, "InternalServerException")}
    if status == 429:
        headers["retry-after"] = "1"
    return json_response(status, {"message": message}, headers)


def verify_sigv4(method: str, url: str, headers: dict[str, str], body: bytes,
                 secret: str, service: str = "bedrock") -> str | None:
    """None when ``headers`` carry a valid SigV4 signature made with ``secret``, else why not."""
    m = _AUTH.match(headers.get("authorization", ""))
    if not m:
        return "Missing Authentication Token"
    access_key, day, region, svc, signed, signature = m.groups()
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC)
    except ValueError:
        return "x-amz-date is missing or invalid"
    if abs(datetime.datetime.now(datetime.UTC) - when) > MAX_SKEW or \
            amz_date[:8] != day:
        return "Signature expired"
    if svc != service:
        return f"Credential should be scoped to correct service: '{service}'"
    names = signed.split(";")
    if "host" not in names or any(n not in headers for n in names):
        return "The request signature we calculated does not match the signature you provided"
    creds = Credentials(access_key, secret, headers.get("x-amz-security-token"))
    req = AWSRequest(method=method, url=url, data=body,
                     headers={n: headers[n] for n in names})
    req.context["timestamp"] = amz_date
    auth = SigV4Auth(creds, service, region)
    expected = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    if expected != signature:
        return "The request signature we calculated does not match the signature you provided"
    return None


def check_auth(req: Request) -> Response | None:
    if req.api_key is None:
        return None
    if req.headers.get("authorization") == "Bearer " + req.api_key:
        return None
    host = req.headers.get("host", "")
    query = "&".join(f"{k}={v}" for k, v in req.query.items())
    url = f"http://{host}{req.raw_path or req.path}" + (f"?{query}" if query else "")
    why = verify_sigv4(req.method, url, req.headers, req.raw_body or b"", req.api_key)
    if why is None:
        return None
    if why == "Missing Authentication Token":
        return error(403, why, "MissingAuthenticationTokenException")
    return error(403, why, "InvalidSignatureException")


def _text_of(blocks: Any) -> tuple[str, str]:
    text, results = [], []
    for b in blocks if isinstance(blocks, list) else []:
        if not isinstance(b, dict):
            continue
        if isinstance(b.get("text"), str):
            text.append(b["text"])
        elif isinstance(b.get("toolResult"), dict):
            for inner in b["toolResult"].get("content") or []:
                if isinstance(inner, dict):
                    results.extend(string_values(inner.get("text") or inner.get("json")))
    return "\n".join(t for t in text if t), "\n".join(r for r in results if r)


def read_prompt(body: dict[str, Any]) -> Prompt:
    sys_text = "\n".join(b.get("text", "") for b in body.get("system") or []
                         if isinstance(b, dict))
    total, msgs, last_user, after_tool = words(sys_text), 1 if sys_text else 0, "", False
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        text, results = _text_of(m.get("content"))
        total += words(text) + words(results)
        msgs += 1
        if m.get("role") == "user" and text:
            last_user = text
        after_tool = bool(results) and not text
    tools = (body.get("toolConfig") or {}).get("tools") or []
    spec = tools[0].get("toolSpec") if tools and isinstance(tools[0], dict) else None
    return Prompt(total, msgs, last_user, after_tool, spec.get("name") if spec else None)


def usage(c: Counts, faults: Faults) -> dict[str, int]:
    """Converse counts: inputTokens excludes cache reads and writes."""
    write = CACHE_WRITE if faults.cached else 0
    out = {"inputTokens": c.prompt - c.cache_read, "outputTokens": c.completion,
           "totalTokens": c.prompt + write + c.completion}
    if faults.cached:
        out.update(cacheReadInputTokens=c.cache_read, cacheWriteInputTokens=write)
    return out


def converse(req: Request, model: str, stream: bool) -> Response | Stream:
    body = req.body
    if not isinstance(body, dict):
        return error(400, "Malformed input request, please reformat your input and try again.")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return error(400, "The model returned the following errors: messages: field required")
    faults = parse_faults(model)
    failed = fault_response(faults, error)
    if failed:
        return failed
    prompt = read_prompt(body)
    reply = plan_reply(prompt)
    counts = count(prompt, reply, faults)
    tid = f"tooluse_mock{req.next_id():08d}"
    stop = "tool_use" if reply.tool else "end_turn"
    if stream:
        return _stream(tid, reply, counts, faults, stop)
    content: list[dict[str, Any]] = (
        [{"toolUse": {"toolUseId": tid, "name": reply.tool, "input": TOOL_ARGS}}]
        if reply.tool else [{"text": reply.text}])
    out: dict[str, Any] = {"output": {"message": {"role": "assistant", "content": content}},
                           "stopReason": stop, "metrics": {"latencyMs": 1}}
    if not faults.no_usage:
        out["usage"] = usage(counts, faults)
    return Response(200, orjson.dumps(out), slow_ms=faults.slow_ms)


def _stream(tid: str, reply: Reply, counts: Counts, faults: Faults, stop: str) -> Stream:
    events = [event("messageStart", {"role": "assistant", "p": "abcd"})]
    if reply.tool:
        events.append(event("contentBlockStart", {"contentBlockIndex": 0, "start": {
            "toolUse": {"toolUseId": tid, "name": reply.tool}}}))
        events += [event("contentBlockDelta", {"contentBlockIndex": 0,
                                               "delta": {"toolUse": {"input": p}}})
                   for p in chunks(TOOL_ARGS_JSON)]
    else:
        events += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p},
                                               "p": "ab"}) for p in chunks(reply.text)]
    events += [event("contentBlockStop", {"contentBlockIndex": 0}),
               event("messageStop", {"stopReason": stop})]
    meta: dict[str, Any] = {"metrics": {"latencyMs": 1}}
    if not faults.no_usage:
        meta["usage"] = usage(counts, faults)
    events.append(event("metadata", meta))
    return stream_for(events, faults, cut_at=1 + CUT_AFTER, content_type=EVENTSTREAM)
