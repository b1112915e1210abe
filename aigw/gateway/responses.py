"""The Responses API's part of ai-router's access decision and of the relay's answer.

``prepare`` rebuilds the conversation from ``previous_response_id`` (tenant
scoped), translates to the canonical chat request, and runs ai-redact's scan
on that canonical request (ai-redact defers it for this API, because only
the router knows the conversation store; the scan covers the stored turns as
well as the new input).  ``answer`` / ``encoder`` build the client's Response
object or event stream and save the conversation for the next turn.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..context import RequestContext, Slice
from ..ingress import responses as ingress
from ..ingress.responses_state import MemoryState, RedisState, not_found
from ..types import Usage


@dataclass(slots=True)
class ResponsesTurn(Slice):
    """Per-request state of a Responses API call (its slice of the context)."""

    shell: ingress.Shell
    store: MemoryState | RedisState | None  # None: the client said store: false
    consumer: str | None
    turn: list[dict[str, Any]] = field(default_factory=list)  # client-view conversation incl. this input

    def save(self, response: dict[str, Any]) -> None:
        if self.store is None or response.get("status") not in ("completed", "incomplete"):
            return
        messages = self.turn + ingress.output_messages(response.get("output") or [])
        self.store.put(self.consumer, response["id"], {"messages": messages,
                                                       "model": response.get("model")})


def prepare(ctx: RequestContext, body: dict[str, Any],
            store: MemoryState | RedisState) -> dict[str, Any]:
    """Responses body -> canonical chat request (scanned by ai-redact when it is on)."""
    ingress.check_request(body)
    history: list[dict[str, Any]] = []
    prev = body.get("previous_response_id")
    consumer = ctx.consumer_name
    if prev:
        state = store.get(consumer, prev)
        if state is None:
            raise not_found(prev)
        history = state.get("messages") or []
    canonical, turn = ingress.to_chat(body, history)
    ctx.canonical_ready(canonical)  # ai-redact scans the whole conversation here
    keep = body.get("store", True) is not False
    ctx.put(ResponsesTurn(shell=ingress.Shell(body, ""), store=store if keep else None,
                                consumer=consumer, turn=copy.deepcopy(turn) if keep else []))
    return canonical


def answer(ctx: RequestContext, resp: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """Canonical (restored) chat.completion -> Response object; saved for the next turn."""
    turn = ctx.slots[ResponsesTurn]
    assert isinstance(turn, ResponsesTurn)
    turn.shell.model = ctx.model.name if ctx.model else resp.get("model", "")
    out = ingress.build_response(resp, turn.shell, usage)
    turn.save(out)
    return out


def encoder(ctx: RequestContext) -> ingress.StreamEncoder:
    turn = ctx.slots[ResponsesTurn]
    assert isinstance(turn, ResponsesTurn)
    turn.shell.model = ctx.model.name if ctx.model else ""
    return ingress.StreamEncoder(turn.shell, on_done=turn.save)
