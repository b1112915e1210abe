"""ai-redact: scan everything the model will see before any upstream connection.

Fails closed: a detector error refuses the request (503) unless ``fail_open``
is set.  A client's mistake is a 4xx in the client API's format, never a 503:
a body the API does not accept is refused with the same 400 ai-router would
give (``parse_body`` runs the one shape check, ``common.validate_shape``), a body over the scan
budget (bytes, number of strings, or time) is a 413.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..context import RequestContext, Slice
from ..errors import GatewayError
from ..pipeline import Exchange, Stage
from ..redact.engine import RedactConfig, ScanTooLarge, scan_request
from ..redact.restore import StreamRestorer, restore_text
from .common import maybe_off_loop, parse_body
from .router import refuse_anonymous

log = logging.getLogger("aigw")

_SCAN_API = {"chat": "chat", "embeddings": "embeddings", "anthropic": "anthropic",
             "count_tokens": "anthropic"}  # counted by the provider: the prompt leaves the gateway


def _engine_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fold the plugin's ``default_action`` and per-pattern ``action`` into the
    engine's single ``actions`` map (explicit ``actions`` entries win)."""
    actions = dict(cfg.get("actions") or {})
    actions.setdefault("default", cfg["default_action"])
    for p in cfg.get("custom_patterns") or ():
        if p.get("action"):
            actions.setdefault(p["name"], p["action"])
    return {**cfg, "actions": actions}


@dataclass(slots=True)
class RedactState(Slice):
    """ai-redact's part of a request: what was found, and how to put it back."""

    counts: dict[str, int] = field(default_factory=dict)
    classes: set[str] = field(default_factory=set)
    restore_map: dict[str, str] = field(default_factory=dict)
    escaped_map: dict[str, str] | None = None   # restore_map JSON-escaped (tool arguments)
    failed_open: bool = False
    restorers: dict[tuple[Any, ...], StreamRestorer] = field(default_factory=dict)
    template: dict[str, Any] | None = None      # id/object/created/model of the stream's chunks

    def escaped(self) -> dict[str, str]:
        if self.escaped_map is None:
            self.escaped_map = json_escaped(self.restore_map)
        return self.escaped_map

    def log_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.counts:
            out["aigw.redaction.counts"] = self.counts
            out["aigw.data_classes"] = sorted(self.classes)
        if self.failed_open:
            out["aigw.redaction.failed_open"] = True
        return out


class RedactStage(Stage):
    """Scans the request before any provider sees it; restores placeholders in the answer
    (non-stream bodies, and stream items split anywhere)."""

    name = "ai-redact"
    priority = 780

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        self.cfg = cfg = self.config  # schema-validated: defaults from schemas/ai-redact.json
        self.rcfg = RedactConfig.from_dict(_engine_config(cfg))
        self.fail_open = bool(cfg["fail_open"])
        self.timeout = cfg["timeout_ms"] / 1000.0
        self.max_bytes = int(cfg["max_scan_bytes"])

    def request(self, ctx: RequestContext) -> None:
        refuse_anonymous(ctx, self.cfg)  # before the body is read (aigw/gateway/router.py)
        if ctx.api == "responses":
            # the Responses API's conversation is rebuilt by ai-router (previous_response_id):
            # the router runs this scan on the whole canonical request before it plans
            self._check_size(ctx)
            ctx.on_canonical(lambda canonical: self.scan(ctx, "chat", canonical))
            return
        api = _SCAN_API.get(ctx.api)
        if api is None:
            return
        self._check_size(ctx)
        self.scan(ctx, api, parse_body(ctx))

    def _check_size(self, ctx: RequestContext) -> None:
        if len(ctx.raw_body) > self.max_bytes:
            raise GatewayError(413, f"The request is larger than the redaction limit of {self.max_bytes} bytes.",
                               code="request_too_large")

    def scan(self, ctx: RequestContext, api: str, body: dict[str, Any]) -> None:
        """Scan (and rewrite in place) one request body of the given walker API."""
        t0 = time.perf_counter()
        try:
            result = maybe_off_loop(len(ctx.raw_body), scan_request, self.rcfg, api, body)
        except GatewayError:
            raise
        except Exception as exc:
            return self._failed(ctx, type(exc).__name__)
        if time.perf_counter() - t0 > self.timeout:
            # the scan finished but over its budget: the request is too big to scan here
            # (a 413 the client can act on, not a 503 that invites a retry)
            log.warning("aigw ai-redact scan over its time budget (%d ms)", int(self.timeout * 1000))
            raise ScanTooLarge(budget="time")
        state = ctx.slot(RedactState)
        state.counts = dict(result.counts)
        state.classes |= set(result.data_classes)
        ctx.data_classes |= set(result.data_classes)
        if result.guard_denied:
            raise GatewayError(400, "The prompt was refused by the gateway's prompt guard.",
                               code="prompt_guard_denied")
        if result.blocked:
            raise GatewayError(400, "The request contains sensitive data that this gateway does not "
                                    f"forward: {', '.join(result.blocked)}.", code="sensitive_data_blocked")
        if self.rcfg.restore:
            state.restore_map.update(result.restore_map)
            state.escaped_map = None

    def _failed(self, ctx: RequestContext, why: str) -> None:
        log.error("aigw ai-redact detection failed (%s)", why)
        if self.fail_open:
            # the body may be half-rewritten: forward the original rather than guess
            ctx.body = None
            ctx.slot(RedactState).failed_open = True
            return
        raise GatewayError(503, "Sensitive-data detection failed, so the request was not sent to any model.",
                           code="redaction_unavailable")

    # ------------------------------------------------------------ response side
    def response(self, ctx: RequestContext, ex: Exchange) -> None:
        state = ctx.slots.get(RedactState)
        if not isinstance(state, RedactState) or not state.restore_map or ex.response is None:
            return
        if ex.wire == "openai" and ctx.api != "embeddings":
            restore_response(ex.response, state.restore_map, state.escaped())
        elif ex.wire == "anthropic":
            restore_message(ex.response, state.restore_map)

    def wants_chunks(self, ctx: RequestContext, ex: Exchange) -> bool:
        state = ctx.slots.get(RedactState)
        return isinstance(state, RedactState) and bool(state.restore_map)

    def chunk(self, ctx: RequestContext, ex: Exchange, item: Any) -> list[Any]:
        state = ctx.slot(RedactState)
        if ex.wire == "anthropic":
            return _restore_event(state, item)
        return _restore_chunk(state, item)

    def flush(self, ctx: RequestContext, ex: Exchange) -> list[Any]:
        state = ctx.slot(RedactState)
        if ex.wire == "anthropic":
            return [ev for index in sorted({k[0] for k in state.restorers})
                    for ev in _event_tails(state, index)]
        return _chunk_tails(state)


RedactRuntime = RedactStage  # the name aigw.validate builds instances by


# ---------------------------------------------------------------- restoring
def json_escaped(restore_map: dict[str, str]) -> dict[str, str]:
    """Tool-call arguments are JSON: placeholders sit inside JSON strings, so the
    originals go back JSON-escaped (a private key's newlines must stay ``\\n``)."""
    return {k: orjson.dumps(v).decode()[1:-1] for k, v in restore_map.items()}


def restore_response(resp: dict[str, Any], restore_map: dict[str, str],
                     escaped: dict[str, str] | None = None) -> None:
    """Placeholders back in a canonical chat.completion (content and tool arguments)."""
    escaped = json_escaped(restore_map) if escaped is None else escaped
    for ch in resp.get("choices") or ():
        msg = ch.get("message") or {}
        if isinstance(msg.get("content"), str):
            msg["content"] = restore_text(msg["content"], restore_map)
        for tc in msg.get("tool_calls") or ():
            fn = tc.get("function") or {}
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = restore_text(fn["arguments"], escaped)


def _restore_leaves(value: Any, restore_map: dict[str, str]) -> Any:
    if isinstance(value, str):
        return restore_text(value, restore_map)
    if isinstance(value, dict):
        return {k: _restore_leaves(v, restore_map) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_leaves(v, restore_map) for v in value]
    return value


def restore_message(msg: dict[str, Any], restore_map: dict[str, str]) -> None:
    """Placeholders back in an Anthropic Message: text and tool input; thinking and
    redacted_thinking blocks are signed by the provider and never changed."""
    for block in msg.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            block["text"] = restore_text(block["text"], restore_map)
        elif block.get("type") in ("tool_use", "server_tool_use") and "input" in block:
            block["input"] = _restore_leaves(block["input"], restore_map)


def _restorer(state: RedactState, key: tuple[Any, ...], json: bool) -> StreamRestorer:
    r = state.restorers.get(key)
    if r is None:
        r = state.restorers[key] = StreamRestorer(state.escaped() if json else state.restore_map)
    return r


def _restore_chunk(state: RedactState, c: dict[str, Any]) -> list[dict[str, Any]]:
    """A canonical chunk restored; the text a restorer holds back (a placeholder may be
    split across chunks) goes out before the choice's finish chunk."""
    if state.template is None:
        state.template = {k: c.get(k) for k in ("id", "object", "created", "model")}
    out: list[dict[str, Any]] = []
    for ch in c.get("choices") or ():
        delta = ch.get("delta") or {}
        idx = ch.get("index", 0)
        text = delta.get("content")
        if isinstance(text, str) and text:
            delta["content"] = _restorer(state, (idx, "c"), False).feed(text)
        for tc in delta.get("tool_calls") or ():
            fn = tc.get("function") or {}
            args = fn.get("arguments")
            if isinstance(args, str) and args:
                fn["arguments"] = _restorer(state, (idx, "t", tc.get("index", 0)), True).feed(args)
        if ch.get("finish_reason"):
            out += _chunk_tails(state, idx)
    out.append(c)
    return out


def _chunk_tails(state: RedactState, idx: int | None = None) -> list[dict[str, Any]]:
    """Chunks carrying the text restorers still hold (content and tool arguments)."""
    out = []
    for key in sorted(k for k in state.restorers if idx is None or k[0] == idx):
        tail = state.restorers.pop(key).flush()
        if not tail:
            continue
        if key[1] == "c":
            delta: dict[str, Any] = {"content": tail}
        else:
            delta = {"tool_calls": [{"index": key[2], "function": {"arguments": tail}}]}
        out.append({**(state.template or {}), "choices": [{"index": key[0], "delta": delta,
                                                             "finish_reason": None}]})
    return out


_NATIVE_FIELDS = {"text_delta": ("text", "text"), "input_json_delta": ("partial_json", "json")}


def _restore_event(state: RedactState, item: tuple[str, dict[str, Any]]) -> list[Any]:
    """An Anthropic stream event restored: text and tool-input deltas; thinking untouched;
    what a restorer holds goes out before the block's stop."""
    event, obj = item
    kind = obj.get("type") or event
    if kind == "content_block_delta":
        delta = obj.get("delta") or {}
        spec = _NATIVE_FIELDS.get(str(delta.get("type")))
        if spec is not None and isinstance(delta.get(spec[0]), str):
            idx = obj.get("index", 0)
            delta[spec[0]] = _restorer(state, (idx, spec[1]), spec[1] == "json").feed(delta[spec[0]])
        return [item]
    if kind == "content_block_stop":
        return [*_event_tails(state, obj.get("index", 0)), item]
    return [item]


def _event_tails(state: RedactState, index: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for kind, fld, dtype in (("text", "text", "text_delta"), ("json", "partial_json", "input_json_delta")):
        r = state.restorers.pop((index, kind), None)
        tail = r.flush() if r is not None else ""
        if tail:
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": dtype, fld: tail}}))
    return out
