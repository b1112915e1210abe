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
from typing import Any

from ..context import RequestContext
from ..errors import GatewayError
from ..redact.engine import RedactConfig, ScanTooLarge, scan_request
from .common import maybe_off_loop, parse_body
from .router import refuse_anonymous

log = logging.getLogger("aigw")

_SCAN_API = {"chat": "chat", "embeddings": "embeddings", "anthropic": "anthropic",
             "count_tokens": "anthropic"}  # counted by the provider: the prompt leaves the gateway


def _engine_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fold the plugin's ``default_action`` and per-pattern ``action`` into the
    engine's single ``actions`` map (explicit ``actions`` entries win)."""
    actions = dict(cfg.get("actions") or {})
    actions.setdefault("default", cfg.get("default_action", "redact"))
    for p in cfg.get("custom_patterns") or ():
        if p.get("action"):
            actions.setdefault(p["name"], p["action"])
    return {**cfg, "actions": actions}


class RedactRuntime:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.rcfg = RedactConfig.from_dict(_engine_config(cfg))
        self.fail_open = bool(cfg.get("fail_open", False))
        self.timeout = cfg.get("timeout_ms", 2000) / 1000.0
        self.max_bytes = int(cfg.get("max_scan_bytes", 4 * 1024 * 1024))

    def access(self, ctx: RequestContext) -> None:
        refuse_anonymous(ctx, self.cfg)  # before the body is read (aigw/gateway/router.py)
        if ctx.api == "responses":
            # the Responses API's conversation is rebuilt by ai-router (previous_response_id):
            # the router calls this scan on the whole canonical request before it plans
            self._check_size(ctx)
            ctx.deferred_scan = lambda canonical: self.scan(ctx, "chat", canonical)
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
        ctx.redaction_counts = dict(result.counts)
        ctx.data_classes |= set(result.data_classes)
        if result.guard_denied:
            raise GatewayError(400, "The prompt was refused by the gateway's prompt guard.",
                               code="prompt_guard_denied")
        if result.blocked:
            raise GatewayError(400, "The request contains sensitive data that this gateway does not "
                                    f"forward: {', '.join(result.blocked)}.", code="sensitive_data_blocked")
        if self.rcfg.restore:
            ctx.restore_map.update(result.restore_map)

    def _failed(self, ctx: RequestContext, why: str) -> None:
        log.error("aigw ai-redact detection failed (%s)", why)
        if self.fail_open:
            # the body may be half-rewritten: forward the original rather than guess
            ctx.body = None
            ctx.log_fields["aigw.redaction.failed_open"] = True
            return
        raise GatewayError(503, "Sensitive-data detection failed, so the request was not sent to any model.",
                           code="redaction_unavailable")
