"""Image sizes from file headers (PNG, JPEG, GIF, WebP) and OpenAI's vision token formulas."""
from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")

# Tile models: (base tokens, tokens per 512px tile), per OpenAI's vision pricing docs.
TILE_MODELS: dict[str, tuple[int, int]] = {
    "gpt-4o-mini": (2833, 5667),
    "gpt-4o": (85, 170),
    "chatgpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "gpt-4-turbo": (85, 170),
    "gpt-4-vision": (85, 170),
    "o1": (75, 150),
    "o3": (75, 150),
}
# Patch models (32px patches, capped at 1536, times a multiplier).
PATCH_MODELS: dict[str, float] = {
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "o4-mini": 1.72,
}
DEFAULT_TILE = (85, 170)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG/GIF/JPEG/WebP header, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return None


def data_url_size(url: str) -> tuple[int, int] | None:
    """Decode a ``data:image/...;base64,`` URL just far enough to read the size."""
    if not url.startswith("data:"):
        return None
    head, sep, payload = url.partition(",")
    if not sep or ";base64" not in head:
        return None
    # Headers sit at the start, but JPEG frame headers can follow large EXIF blocks.
    for chars in (4096, 262144, len(payload)):
        chunk = payload[:chars]
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            size = image_size(base64.b64decode(chunk))
        except (binascii.Error, ValueError, struct.error):
            return None
        if size is not None or chars >= len(payload):
            return size
    return None


def _lookup(table: Mapping[str, V], model: str) -> V | None:
    for prefix in sorted(table, key=len, reverse=True):
        if model == prefix or model.startswith(prefix + "-"):
            return table[prefix]
    return None


def tile_tokens(width: int, height: int, base: int, per_tile: int) -> int:
    """High detail: fit in 2048x2048, shrink shortest side to 768, count 512px tiles."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return base + per_tile * tiles


def patch_tokens(width: int, height: int, multiplier: float) -> int:
    """32px patches, scaled down to at most 1536 patches, times the model's multiplier."""
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > 1536:
        r = math.sqrt(32 * 32 * 1536 / (width * height))
        r *= min(math.floor(width * r / 32) / (width * r / 32),
                 math.floor(height * r / 32) / (height * r / 32))
        patches = math.ceil(width * r / 32) * math.ceil(height * r / 32)
    return math.ceil(min(patches, 1536) * multiplier)


def image_tokens(model: str, detail: str, size: tuple[int, int] | None) -> tuple[int, bool]:
    """(tokens, estimated) for one image input."""
    multiplier = _lookup(PATCH_MODELS, model)
    if multiplier is not None:
        if size is None:
            return math.ceil(1536 * multiplier), True
        return patch_tokens(size[0], size[1], multiplier), True  # formula not verified here
    known = _lookup(TILE_MODELS, model)
    base, per_tile = known or DEFAULT_TILE
    estimated = known is None
    if detail == "low":
        return base, estimated
    if size is None:
        return base + 4 * per_tile, True
    return tile_tokens(size[0], size[1], base, per_tile), estimated
