"""Server-sent events: an incremental decoder and an encoder.

The decoder takes bytes as they arrive from a socket (any split, including
inside a line or a multi-byte character) and yields complete events.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Event:
    data: str
    event: str | None = None
    id: str | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEDecoder:
    """Incremental SSE parser (WHATWG event-stream rules, subset we need)."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        self._buf += chunk
        out: list[Event] = []
        while True:
            # find the earliest line terminator (\n, \r\n or \r)
            nl = self._buf.find(b"\n")
            cr = self._buf.find(b"\r")
            if nl < 0 and cr < 0:
                break
            if cr >= 0 and (nl < 0 or cr < nl):
                if cr == len(self._buf) - 1:
                    break  # wait: could be \r\n split across chunks
                end, skip = cr, 2 if self._buf[cr + 1:cr + 2] == b"\n" else 1
            else:
                end, skip = nl, 1
            line = self._buf[:end].decode("utf-8", errors="replace")
            self._buf = self._buf[end + skip:]
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        return out

    def close(self) -> list[Event]:
        """Flush at end of stream (a last event without a blank line)."""
        out = []
        if self._buf:
            ev = self._line(self._buf.decode("utf-8", errors="replace"))
            self._buf = b""
            if ev is not None:
                out.append(ev)
        ev = self._line("")
        if ev is not None:
            out.append(ev)
        return out

    def _line(self, line: str) -> Event | None:
        if line == "":
            if not self._data and self._event is None:
                return None
            ev = Event(data="\n".join(self._data), event=self._event, id=self._id)
            self._data, self._event = [], None
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def iter_events(chunks: Iterator[bytes]) -> Iterator[Event]:
    dec = SSEDecoder()
    for c in chunks:
        yield from dec.feed(c)
    yield from dec.close()


def encode(data: Any, event: str | None = None) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already bytes/str."""
    if isinstance(data, (bytes, bytearray)):
        payload = bytes(data)
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = orjson.dumps(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
