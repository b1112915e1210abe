"""How a provider attempt fails, and the small reads every attempt shares."""
from __future__ import annotations

import gevent
import urllib3

from ..providers.base import Adapter
from ..providers.openai_responses import OpenAIResponsesAdapter

# what an attempt calls: the provider type's adapter, or OpenAI's Responses API adapter for
# Responses clients on openai targets (aigw.relay.native.upstream_adapter; chat only: it has
# no embeddings side)
AttemptAdapter = Adapter | OpenAIResponsesAdapter


class Retryable(Exception):
    """A target failed before any byte reached the client: try the next one."""

    def __init__(self, kind: str, status: int | None = None, summary: str = ""):
        super().__init__(kind)
        self.kind = kind          # connect | timeout | first_token_timeout | status | protocol | empty
        self.status = status
        self.summary = summary


class SentAndFailed(Exception):
    """The request left for the provider and then the exchange failed: the provider may
    have processed it, so no other target is tried (that could send it twice)."""


def read_all(resp: urllib3.BaseHTTPResponse, total_timeout: float) -> bytes:
    with gevent.Timeout(total_timeout):
        return resp.read()


def safe_summary(adapter: AttemptAdapter, status: int, data: bytes) -> str:
    try:
        return adapter.error_summary(status, data)[:200]
    except Exception:
        return f"HTTP {status}"
