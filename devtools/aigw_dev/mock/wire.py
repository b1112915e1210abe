"""Request/response values passed between the HTTP server and the API modules."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .behaviour import Faults

JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or text when not JSON, or None when empty
    api_key: str | None  # the key the mock expects (None: any)
    next_id: Callable[[], int]  # per-server counter for response ids
    state: Any = None  # the server's MockState (issued OAuth tokens)
    raw_body: bytes = b""  # the body as received (SigV4 signs these bytes)
    raw_path: str = ""  # the path as received, still percent-encoded


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    slow_ms: int = 0
    drop: bool = False  # send nothing and close the connection


@dataclass
class Stream:
    """A chunked event stream; ``cut_at`` events are sent before a cut."""

    events: list[bytes]
    content_type: str = SSE
    slow_ms: int = 0
    delay_ms: int = 0
    cut_at: int | None = None  # None: send everything and end the stream properly


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(obj), headers=dict(headers or {}))


def fault_headers(status: int) -> dict[str, str]:
    return {"retry-after": "1"} if status == 429 else {}


def fault_response(faults: Faults, error: Callable[[int, str], Response]) -> Response | None:
    """The error a ``fault-NNN`` model asks for, in the API's own ``error`` format.

    None when the model names no fault status."""
    if not faults.status:
        return None
    resp = error(faults.status, f"mock fault {faults.status}")
    resp.slow_ms = faults.slow_ms
    return resp


def stream_for(events: list[bytes], faults: Faults, cut_at: int,
               content_type: str = SSE) -> Stream:
    return Stream(events, content_type, slow_ms=faults.slow_ms,
                  delay_ms=faults.stream_delay_ms,
                  cut_at=min(cut_at, len(events) - 1) if faults.cut else None)
