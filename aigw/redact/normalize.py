"""Normalise text before matching, with a map back to the original offsets.

Detectors match the *normalised* text; replacements are written into the
*original* text over the original span of each finding, so a client's
fullwidth digits, zero-width joiners or ``%40`` are covered exactly and
nothing else is touched.

Stages (each one a pass with its own offset map; maps are chained):

* ``unicode``: NFKC per character (fullwidth and other compatibility forms),
  Unicode format characters (category Cf: zero-width space/joiner, soft
  hyphen, bidi controls, BOM) dropped, dashes (Pd) to ``-``, spaces (Zs) to
  `` ``, line/paragraph separators to ``\\n``, other controls to a space.
* ``escapes``: percent-encoding (``%40``, UTF-8 sequences), HTML character
  references (``&#64;``, ``&#x40;``, ``&commat;``) and JSON/C escapes
  (``\\u0040``, surrogate pairs, ``\\n``, ``\\/`` ...) decoded.

A stage runs again when the previous one produced text it would change
(``%EF%BC%94`` decodes to a fullwidth digit; ``%2540`` to ``%40``), at most
``_MAX_STAGES`` stages in all.  Plain ASCII text without ``%``, ``&`` or a
backslash is returned as is (no map): the common case costs two C-level checks.
"""
from __future__ import annotations

import bisect
import html
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

import re2

_MAX_STAGES = 4
_NEEDS_ESCAPES = re.compile(r"[%&\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPE = re.compile(
    r"(?P<pct>(?:%[0-9A-Fa-f]{2})+)"
    r"|(?P<html>&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});)"
    r"|(?P<uni>\\u[0-9A-Fa-f]{4})"
    r"|(?P<esc>\\[nrtbf/\\\"'])"
    r"|(?P<ctl>[\x00-\x08\x0b\x0c\x0e-\x1f\x7f])"
)
_ESCAPE_RE2 = re2.compile(_ESCAPE.pattern)
_SIMPLE_ESC = {"n": "\n", "r": "\r", "t": "\t", "b": " ", "f": " ", "/": "/", "\\": "\\",
               '"': '"', "'": "'"}
_CHAR_CACHE: dict[str, str] = {}


def _unicode_char(ch: str) -> str:
    out = _CHAR_CACHE.get(ch)
    if out is not None:
        return out
    cat = unicodedata.category(ch)
    if cat == "Cf":
        out = ""
    elif cat == "Pd":
        out = "-"
    elif cat == "Zs":
        out = " "
    elif cat in ("Zl", "Zp"):
        out = "\n"
    elif cat == "Cc":
        out = " "
    else:
        out = unicodedata.normalize("NFKC", ch)
        # NFKC may yield characters that are themselves format/dash/space characters
        if out != ch and not out.isascii():
            out = "".join(_unicode_char(c) if c != ch else c for c in out)
    if len(_CHAR_CACHE) < 65536:
        _CHAR_CACHE[ch] = out
    return out


@dataclass
class _Map:
    """Replaced segments of one stage, in order: normalised [ns, ne) came from original [os, oe).

    Outside the segments the text is unchanged (offsets shift by the segments before)."""
    ns: list[int] = field(default_factory=list)
    ne: list[int] = field(default_factory=list)
    os: list[int] = field(default_factory=list)
    oe: list[int] = field(default_factory=list)

    def add(self, ns: int, ne: int, os: int, oe: int) -> None:
        self.ns.append(ns)
        self.ne.append(ne)
        self.os.append(os)
        self.oe.append(oe)

    def start(self, n: int) -> int:
        """Original offset where normalised character ``n`` starts."""
        i = bisect.bisect_right(self.ns, n) - 1
        if i < 0:
            return n
        if n < self.ne[i]:
            return self.os[i]
        return self.oe[i] + (n - self.ne[i])

    def end(self, n: int) -> int:
        """Original (exclusive) end offset for a normalised exclusive end ``n``."""
        if n <= 0:
            return self.start(0) if n == 0 else 0
        i = bisect.bisect_right(self.ns, n - 1) - 1
        if i < 0:
            return n
        if n - 1 < self.ne[i]:
            return self.oe[i]
        return self.oe[i] + (n - self.ne[i])


@dataclass
class Normalized:
    original: str
    text: str
    maps: list[_Map]

    @property
    def changed(self) -> bool:
        return bool(self.maps)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) of normalised [start, end)."""
        for m in reversed(self.maps):
            start, end = m.start(start), m.end(end)
        return start, end


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_SPECIAL_CATS = frozenset({"Cf", "Pd", "Zs", "Zl", "Zp", "Cc"})
# (the special class, the special class or an escape), built by _special()
_SPECIALS: tuple[re2._Regexp, re2._Regexp] | None = None
# planes holding characters of the categories above (BMP, SMP, tags)
_SPECIAL_PLANES = ((0x80, 0x10000), (0x10000, 0x20000), (0xE0000, 0xE1000))


def _special() -> tuple[re2._Regexp, re2._Regexp]:
    """One RE2 class of the non-ASCII format, dash, space and control characters
    (built once per process, ~30 ms; RE2 because Python's re is slow on a class
    with astral characters), and the same class or an escape."""
    global _SPECIALS
    if _SPECIALS is None:
        chars = [chr(cp) for lo, hi in _SPECIAL_PLANES for cp in range(lo, hi)
                 if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) in _SPECIAL_CATS]
        cls = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"
        _SPECIALS = (re2.compile(cls), re2.compile(cls + "|" + _ESCAPE.pattern))
    return _SPECIALS


def _unchanged(text: str, data: bytes) -> bool:
    """True when neither stage would change ``text`` (UTF-8 ``data``): NFKC-normalised, and
    no special character nor escape anywhere (one RE2 pass instead of one per stage)."""
    special_or_escape = _special()[1]
    return (text.isascii() or unicodedata.is_normalized("NFKC", text)) \
        and special_or_escape.search(data) is None


def warm_up() -> None:
    _special()


def _unicode_stage(text: str, data: bytes | None = None) -> tuple[str, _Map | None]:
    pieces: list[str] = []
    m = _Map()
    last = 0
    n = 0  # length of the normalised text so far
    special = _special()[0]
    if unicodedata.is_normalized("NFKC", text) and special.search(text if data is None else data) is None:
        return text, None  # nothing to change (the common case, checked in C)
    for run in _NON_ASCII.finditer(text):
        chunk = run.group()
        if unicodedata.is_normalized("NFKC", chunk) and special.search(chunk) is None:
            continue
        for k in range(run.start(), run.end()):
            ch = text[k]
            out = _unicode_char(ch)
            if out == ch:
                continue
            pieces.append(text[last:k])
            n += k - last
            m.add(n, n + len(out), k, k + 1)
            pieces.append(out)
            n += len(out)
            last = k + 1
    if not m.ns:
        return text, None
    pieces.append(text[last:])
    return "".join(pieces), m


def _pct(run: str) -> list[tuple[str, int]]:
    """Decode a run of %XX escapes: (text, escapes consumed) per character; bad UTF-8 stays."""
    data = bytes.fromhex(run.replace("%", ""))
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(data):
        b = data[i]
        size = 1 if b < 0x80 else 2 if 0xC0 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF8 else 0
        if size:
            try:
                out.append((data[i:i + size].decode("utf-8"), size))
                i += size
                continue
            except UnicodeDecodeError:
                pass
        out.append((run[3 * i:3 * i + 3], 1))  # not decodable: keep the escape literally
        i += 1
    return out


def _escapes(text: str) -> Iterator[re.Match[str]]:
    """``_ESCAPE`` matches, tried only where an escape can start (a fast one-class scan)."""
    for start in _NEEDS_ESCAPES.finditer(text):
        mt = _ESCAPE.match(text, start.start())
        if mt is not None:
            yield mt


def _escape_stage(text: str, data: bytes | None = None) -> tuple[str, _Map | None]:
    if _ESCAPE_RE2.search(text if data is None else data) is None:
        return text, None  # "50%" and "R&D" only: nothing to decode (RE2 finds that fast)
    pieces: list[str] = []
    m = _Map()
    last = 0
    n = 0
    for mt in _escapes(text):
        s, e = mt.span()
        if s < last:
            continue  # the low half of a surrogate pair decoded with its high half
        kind = mt.lastgroup
        if kind == "pct":
            pieces.append(text[last:s])
            n += s - last
            pos = s
            for out, used in _pct(mt.group()):
                m.add(n, n + len(out), pos, pos + 3 * used)
                pieces.append(out)
                n += len(out)
                pos += 3 * used
            last = e
            continue
        raw = mt.group()
        if kind == "html":
            out = html.unescape(raw)
            if out == raw:
                continue
        elif kind == "uni":
            code = int(raw[2:], 16)
            if 0xD800 <= code < 0xDC00:
                # a high surrogate: combine with a directly following low one
                nxt = text[e:e + 6]
                if len(nxt) == 6 and nxt[:2] == "\\u":
                    try:
                        low = int(nxt[2:], 16)
                    except ValueError:
                        low = -1
                    if 0xDC00 <= low < 0xE000:
                        out = chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
                        pieces.append(text[last:s])
                        n += s - last
                        m.add(n, n + 1, s, e + 6)
                        pieces.append(out)
                        n += 1
                        last = e + 6
                        continue
                continue  # a lone surrogate: left as written
            if 0xDC00 <= code < 0xE000:
                continue
            out = chr(code)
        elif kind == "esc":
            out = _SIMPLE_ESC[raw[1]]
        else:
            out = " "
        pieces.append(text[last:s])
        n += s - last
        m.add(n, n + len(out), s, e)
        pieces.append(out)
        n += len(out)
        last = e
    if not m.ns:
        return text, None
    pieces.append(text[last:])
    return "".join(pieces), m


def normalize(text: str, data: bytes | None = None) -> Normalized:
    """The text detectors match, and the way back to ``text``'s offsets.

    ``data``: ``text`` encoded as UTF-8, when the caller has it (the whole-text checks
    then run on it without encoding the text again)."""
    maps: list[_Map] = []
    cur = text
    stage = 0
    want_unicode = not cur.isascii()
    want_escapes = _NEEDS_ESCAPES.search(cur) is not None
    if data is not None and (want_unicode or want_escapes) and _unchanged(text, data):
        return Normalized(text, text, maps)
    while stage < _MAX_STAGES and (want_unicode or want_escapes):
        if maps:
            data = None  # the bytes are the original text's
        if want_unicode:
            cur, m = _unicode_stage(cur, data)
            want_unicode = False
            stage += 1
            if m is not None:
                maps.append(m)
                want_escapes = want_escapes or _NEEDS_ESCAPES.search(cur) is not None
        elif want_escapes:
            cur, m = _escape_stage(cur, data)
            want_escapes = False
            stage += 1
            if m is not None:
                maps.append(m)
                want_unicode = not cur.isascii()
                want_escapes = _NEEDS_ESCAPES.search(cur) is not None
    return Normalized(text, cur, maps)
