"""AWS event-stream framing (``application/vnd.amazon.eventstream``), the encoder side.

botocore ships only the parser; the mock (and the fixtures) need frames:
prelude (total length, headers length, CRC32 of those 8 bytes), headers
(name length u8, name, type 7 = string, value length u16, value), payload,
CRC32 of everything before it.  Every header here is a string.
"""
from __future__ import annotations

import struct
import zlib
from typing import Any

import orjson


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, obj: dict[str, Any]) -> bytes:
    return frame({":event-type": event_type, ":content-type": "application/json",
                  ":message-type": "event"}, orjson.dumps(obj))


def exception(exception_type: str, message: str) -> bytes:
    return frame({":exception-type": exception_type, ":content-type": "application/json",
                  ":message-type": "exception"}, orjson.dumps({"message": message}))
