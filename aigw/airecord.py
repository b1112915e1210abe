"""The per-request AI record for Kong's logs: no prompt or answer text, no consumer name, no key.

Two ways into Kong's logs (Kong/kong tag 3.9.1), because of when an external plugin runs:

* ``decision(ctx)`` — what ai-router decided in access (API, requested model, provider and
  model of the first target, stream). ai-router puts it into Kong's log serializer with
  ``kong.log.set_serialize_value("ai.aigw", ...)`` as Kong's own AI plugins do
  (kong/llm/drivers/shared.lua 881-891 ``ai.<plugin>.meta/usage``), so every Kong log plugin
  (file-log, http-log, tcp-log...) carries it.
* ``outcome(ctx, outcome)`` — usage, cost, status, cache status, attempts, once the request is
  finished. Only the log phase knows it, and an external plugin's log event runs in a timer
  after every log plugin has serialized (plugin_servers/plugin.lua 144-181 build_phases; log
  plugins call kong.log.serialize() synchronously, e.g. file-log/handler.lua 80): a value set
  there never reaches them. So ai-router's log phase writes it to Kong's error log with
  ``kong.log.notice`` (visible at Kong's default log level; plugin-server output is logged at
  info only, process.lua grab_logs) — and the relay's JSON line keeps the full record.
"""
from __future__ import annotations

import time
from typing import Any

from .context import Outcome, RequestContext

KEY = "ai.aigw"
KEEP_S = 120.0


def decision(ctx: RequestContext) -> dict[str, Any]:
    target = ctx.plan[0] if ctx.plan else None
    return {
        "request_id": ctx.id,
        "api": ctx.api,
        "model": getattr(ctx.model, "name", None),
        "provider": target.provider.name if target is not None else None,
        "response_model": target.model if target is not None else None,
        "stream": bool(ctx.stream),
    }


def outcome(ctx: RequestContext, out: Outcome) -> dict[str, Any]:
    target = out.target
    usage = out.usage
    rec: dict[str, Any] = {
        "event": "aigw.request",
        "request_id": ctx.id,
        "api": ctx.api,
        "model": getattr(ctx.model, "name", None),
        "provider": target.provider.name if target is not None else None,
        "response_model": target.model if target is not None else None,
        "status": out.status,
        "outcome": out.error or ("ok" if 200 <= out.status < 400 else "error"),
        "stream": bool(ctx.stream),
        "attempts": len(out.attempts),
        "cache_status": out.cache_status,
        "cost_usd": out.cost_usd,
        "duration_ms": round(out.duration * 1000, 2),
        "ttft_ms": round(out.ttft * 1000, 2) if out.ttft is not None else None,
    }
    if usage is not None:
        rec["usage"] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                        "estimated": bool(getattr(usage, "estimated", False))}
    return rec


class Recent:
    """Outcome records of finished requests until ai-router's log phase takes them."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}

    def put(self, cid: str, rec: dict[str, Any]) -> None:
        now = time.monotonic()
        if len(self._items) > 256:
            for k in [k for k, (t, _) in self._items.items() if now - t > KEEP_S]:
                del self._items[k]
        self._items[cid] = (now, rec)

    def pop(self, cid: str) -> dict[str, Any] | None:
        item = self._items.pop(cid, None)
        return item[1] if item else None


RECENT = Recent()
