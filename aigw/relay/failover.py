"""How a provider attempt fails, and the small reads every attempt shares."""
from __future__ import annotations

from typing import Any

import gevent


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


def read_all(resp: Any, total_timeout: float) -> bytes:
    with gevent.Timeout(total_timeout):
        return resp.read()


def safe_summary(adapter: Any, status: int, data: bytes) -> str:
    try:
        return adapter.error_summary(status, data)[:200]
    except Exception:
        return f"HTTP {status}"
