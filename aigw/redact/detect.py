"""PII and secret detection: linear-time candidates (RE2) plus validators.

Every detector scans the text on its own, so candidates from different
detectors may overlap and each is validated by its own validator (a digit run
that fails Luhn is still seen by the phone detector).  Valid spans are then
resolved: the longest span wins, ties go to the detector listed first in
``BUILTIN_ENTITIES``.  Scanning works on the UTF-8 bytes of the text; the
returned offsets are ``str`` offsets.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# the stdlib's regex parser reads the built-in patterns alike; typeshed stubs only the deprecated
# sre_constants/sre_parse aliases of these modules, not the modules themselves (so: Any)
from re import _constants as _sre  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

import orjson
import phonenumbers
import re2
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.us import ssn as _ssn

# Detector order doubles as the tie-break priority (earlier wins).
SECRET_ENTITIES = (
    "private_key", "jwt", "anthropic_key", "openai_key", "aws_access_key",
    "github_token", "slack_token",
)
BUILTIN_ENTITIES = SECRET_ENTITIES + (
    "credit_card", "iban", "us_ssn", "email", "ipv6", "ipv4", "phone",
)

_CLASSES: dict[str, frozenset[str]] = {
    **{e: frozenset({"secret"}) for e in SECRET_ENTITIES},
    "credit_card": frozenset({"financial", "pii"}),
    "iban": frozenset({"financial", "pii"}),
    "us_ssn": frozenset({"pii"}),
    "email": frozenset({"pii"}),
    "phone": frozenset({"pii"}),
    "ipv4": frozenset({"pii"}),
    "ipv6": frozenset({"pii"}),
}

_NAME_RE = re2.compile(r"^[a-z][a-z0-9_]{0,39}$")

Span = tuple[int, int]
# A validator gets the candidate text and returns the valid sub-spans
# (relative to the candidate); [] rejects it.
Validator = Callable[[str], list[Span]]


@dataclass(frozen=True)
class Found:
    entity: str
    start: int  # str offsets into the scanned text
    end: int
    value: str


@dataclass(frozen=True)
class CustomPattern:
    name: str
    pattern: str
    data_class: str = "custom"


# ---------------------------------------------------------------- validators

def _whole(ok: bool, value: str) -> list[Span]:
    return [(0, len(value))] if ok else []


def _email(value: str) -> list[Span]:
    # trim punctuation the loose candidate may have taken at the start
    start = 0
    while start < len(value) and value[start] in "._%+-":
        start += 1
    local, _, domain = value[start:].rpartition("@")
    local, domain = local.rstrip(), domain.lstrip()
    if not local or len(local) > 64 or len(value) - start > 254:
        return []
    if local.endswith(".") or ".." in local:
        return []
    labels = domain.split(".")
    if any(not lab or len(lab) > 63 or lab[0] == "-" or lab[-1] == "-" for lab in labels):
        return []
    return [(start, len(value))]


_CARD_PREFIXES: tuple[tuple[str, str, frozenset[int]], ...] = (
    # (low, high) IIN range compared on the same number of leading digits, lengths
    ("4", "4", frozenset({13, 16, 19})),                    # Visa
    ("51", "55", frozenset({16})),                          # Mastercard
    ("2221", "2720", frozenset({16})),                      # Mastercard 2-series
    ("34", "34", frozenset({15})), ("37", "37", frozenset({15})),  # Amex
    ("6011", "6011", frozenset({16, 17, 18, 19})),          # Discover
    ("644", "649", frozenset({16, 17, 18, 19})),
    ("65", "65", frozenset({16, 17, 18, 19})),
    ("3528", "3589", frozenset({16, 17, 18, 19})),          # JCB
    ("300", "305", frozenset({14, 15, 16, 17, 18, 19})),    # Diners
    ("36", "36", frozenset({14, 15, 16, 17, 18, 19})),
    ("38", "39", frozenset({16, 17, 18, 19})),
    ("62", "62", frozenset({16, 17, 18, 19})),              # UnionPay
    ("50", "50", frozenset(range(12, 20))),                 # Maestro
    ("56", "58", frozenset(range(12, 20))),
    ("63", "63", frozenset(range(12, 20))), ("67", "67", frozenset(range(12, 20))),
    ("2200", "2204", frozenset({16, 17, 18, 19})),          # Mir
)


def _prefix_table(n: int) -> bytes:
    """For card length ``n``: byte p is 1 when a number starting with the 4 digits p has a
    known issuer prefix (every prefix above has at most 4 digits, low and high alike)."""
    table = bytearray(10_000)
    for low, high, lengths in _CARD_PREFIXES:
        if n in lengths:
            pad = 4 - len(low)
            lo, hi = int(low) * 10 ** pad, (int(high) + 1) * 10 ** pad
            table[lo:hi] = b"\x01" * (hi - lo)
    return bytes(table)


_CARD_TABLES = {n: _prefix_table(n) for n in range(12, 20)}


def card_number_ok(digits: str) -> bool:
    """Known issuer prefix and length, and a valid Luhn check digit (``digits``: ASCII digits)."""
    table = _CARD_TABLES.get(len(digits))
    return table is not None and table[int(digits[:4])] == 1 and _luhn.is_valid(digits)


_DIGIT_RUN = re.compile(r"[0-9]+")  # stdlib re on short candidates only


def _groups(value: str) -> list[Span]:
    """Spans of the ASCII digit groups of ``value``."""
    return [m.span() for m in _DIGIT_RUN.finditer(value)]


_MAX_CARD_GROUPS = 40  # longer grouped runs are not split into cards (about 10 cards)


_STRONG_BREAK = re.compile(r"[ \t]*\r?\n[ \t]*\r?\n[ \t\r\n]*")


def _card(value: str) -> list[Span]:
    if "\n" not in value:
        return _card_block(value)
    # a paragraph break ends a number: each block is checked on its own
    out: list[Span] = []
    pos = 0
    for brk in list(_STRONG_BREAK.finditer(value)) + [None]:
        end = brk.start() if brk else len(value)
        block = value[pos:end]
        if block:
            out.extend((pos + s, pos + e) for s, e in _card_block(block))
        if brk:
            pos = brk.end()
    return out


def _card_block(value: str) -> list[Span]:
    groups = _groups(value)
    gd = [value[s:e] for s, e in groups]
    if card_number_ok("".join(gd)):
        return [(0, len(value))]
    if not 2 <= len(groups) <= _MAX_CARD_GROUPS:
        return []  # one plain digit run: do not carve a card out of a longer id
    # The run must be tiled by valid cards, apart from a short leading index
    # ("1 4111 ...") and a short trailing group (CVV, expiry): cards listed one
    # after another are found, a card inside a longer grouped id is not.
    n = len(groups)
    lead = [0, 1] if groups[0][1] - groups[0][0] <= 2 else [0]
    tail_short = groups[-1][1] - groups[-1][0] <= 4

    cum = [0]
    for g in gd:
        cum.append(cum[-1] + len(g))
    memo: dict[int, tuple[Span, ...] | None] = {}

    def tile(i: int) -> tuple[Span, ...] | None:
        if i in memo:
            return memo[i]
        found: tuple[Span, ...] | None = None
        if i == n or (i == n - 1 and tail_short and i > 0):
            found = ()
        else:
            for j in range(min(n - 1, i + 18), i - 1, -1):  # longest card first
                if not 12 <= cum[j + 1] - cum[i] <= 19:
                    continue
                if card_number_ok("".join(gd[i:j + 1])):
                    rest = tile(j + 1)
                    if rest is not None:
                        found = ((groups[i][0], groups[j][1]),) + rest
                        break
        memo[i] = found
        return found

    for start in lead:
        found = tile(start)
        if found:
            return list(found)
    return []


_SEPS = re.compile(r"[ \t\r\n./\-]+")


def _iban_value(value: str) -> list[Span]:
    if _iban.is_valid(_SEPS.sub("", value)):
        return [(0, len(value))]
    # the loose candidate may have taken following upper-case words: trim groups
    for sep in reversed(list(_SEPS.finditer(value))):
        if _iban.is_valid(_SEPS.sub("", value[:sep.start()])):
            return [(0, sep.start())]
    return []


def _ssn_value(value: str) -> list[Span]:
    seps = _NON_DIGITS.findall(value)
    return _whole(len(seps) == 2 and seps[0] == seps[1] and _ssn.is_valid(_NON_DIGITS.sub("", value)),
                  value)


_NON_DIGITS = re.compile(r"[^0-9]+")


def _ipv4(value: str) -> list[Span]:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return []
    return [(0, len(value))]


def _ipv6(value: str) -> list[Span]:
    if "::" not in value and value.count(":") < 6:
        return []  # quick: 10:30:45 and the like
    if sum(ch not in ":." for ch in value) < 3:
        return []  # "::", "::1", "a::b": too little to be worth flagging
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return []
    return [(0, len(value))]


def _b64json(part: str) -> object:
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    return orjson.loads(raw)


def _jwt(value: str) -> list[Span]:
    value = value[:_trim_lines(value)[0][1]]
    parts = "".join(value.split()).split(".")
    if len(parts) != 3 or len(parts[0]) < 7 or len(parts[1]) < 7 or len(parts[2]) < 8:
        return []
    try:
        header = _b64json(parts[0])
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return []
    return _whole(isinstance(header, dict) and ("alg" in header or "typ" in header), value)


def looks_random(part: str) -> bool:
    """A line of a broken key rather than a prose word: a digit, two capitals, or _ or -."""
    return (any(c.isdigit() for c in part) or sum(c.isupper() for c in part) >= 2
            or "_" in part or "-" in part)


def _trim_lines(value: str, min_len: int = 0) -> list[Span]:
    """A key broken over lines: keep leading lines, drop trailing prose-like ones."""
    lines = value.split("\n")
    keep = len(lines)
    while keep > 1 and not looks_random(lines[keep - 1].strip()):
        keep -= 1
    end = len("\n".join(lines[:keep]))
    end = len(value[:end].rstrip("\r"))
    compact = "".join(value[:end].split())
    return [(0, end)] if len(compact) >= min_len else []


def _key(min_len: int) -> Validator:
    return lambda value: _trim_lines(value, min_len)


def _openai(value: str) -> list[Span]:
    spans = _trim_lines(value, 23)
    if not spans:
        return []
    value = value[:spans[0][1]]
    body = value[3:]
    if value.startswith("sk-ant-"):
        return []
    return _whole(any(c.isdigit() for c in body) and any(c.isalpha() for c in body), value)


def _aws(value: str) -> list[Span]:
    seps = _SEPS.findall(value)
    if not seps or sum(c.isdigit() for c in value) >= 2:
        return [(0, len(value))]
    # separated and (almost) no digits: a key written in regular groups or broken over
    # two lines, not upper-case prose after "ASIA"
    groups = _SEPS.split(value)
    if len(seps) == 1 and "\n" in seps[0]:
        return [(0, len(value))]
    if len(set(seps)) == 1 and len({len(g) for g in groups[:-1]}) == 1:
        return [(0, len(value))]
    return []


def _github(value: str) -> list[Span]:
    if value.startswith("github_pat_"):
        return _trim_lines(value, 33)
    return [(0, len(value))]


def _national_lengths(region: str) -> frozenset[int]:
    """Digit counts a number written without "+" can have in ``region``."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None:
        raise ValueError(f"unknown phone region {region!r}")
    desc = meta.general_desc
    lengths = set((desc.possible_length if desc is not None else None) or range(7, 16))
    extra = {len(meta.national_prefix or ""), len(str(meta.country_code))}
    return frozenset(n + e for n in lengths for e in extra | {0})


def _phone_ok(text: str, region: str, national: frozenset[int],
              groups: list[Span] | None = None) -> bool:
    """``groups``: ``_groups(text)`` when the caller has them."""
    # every check but the last two is a plain refusal: the cheapest come first
    if groups is None:
        groups = _groups(text)
    digits = sum(e - s for s, e in groups)
    if not 7 <= digits <= 15:
        return False
    plus = text[0] == "+"
    if not plus and digits not in national:
        return False  # cannot be a number of the default region
    if text.count("(") != text.count(")") or _ODD_SEP.search(text):
        return False  # a paragraph break or a run of separators: not one number
    # one-digit groups occur only up front ("1 415 ...", "+33 1 23 ..."), never last
    if len(groups) > 1 and (groups[-1][1] - groups[-1][0] < 2
                            or any(e - s < 2 for s, e in groups[2 if plus else 1:])):
        return False
    if text.count("-") == 2 and len(text) == 10 and text[4] == "-" and text[7] == "-":
        return False  # an ISO date
    if "." in text and text.count(".") == 1 and not any(c in text for c in " -()+"):
        return False  # a decimal number
    if "." in text and any(e - s < 2 for s, e in groups[1 if plus else 0:]):
        return False  # dotted numbers: 415.555.0132 yes, 4.4.26269.296 (a build) no
    try:
        num = phonenumbers.parse(_PARSE_SEP.sub(" ", text), region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(num)


_DATE = re.compile(r"\d{1,4}([/.\-])\d{1,2}\1\d{1,4}")
_ODD_SEP = re.compile(r"\n[ \t\r]*\n|[ \t\r\n./\-]{4,}")
_PARSE_SEP = re.compile(r"[ \t\r\n/]+")


_NO_DIGITS = str.maketrans("", "", "0123456789")


def _phone(region: str, quick: bool = True) -> Validator:
    """The phone validator of ``region``; ``quick=False`` turns off the refusals that only
    save time (the tests compare both)."""
    national = _national_lengths(region)
    fewest = min(national)

    def check(value: str) -> list[Span]:
        if quick and value[0] != "+" and len(value) - len(value.translate(_NO_DIGITS)) < fewest:
            # too few digits for a number of the region, and the candidate's only "+" can be
            # its first character: neither it nor any window of it can pass _phone_ok
            return []
        if _DATE.fullmatch(value):
            return []  # 4/12/2024, 2024-04-12: a date (the common case, so refused first)
        s, e = 0, len(value)
        if value.endswith(")") and value.count(")") > value.count("("):
            e -= 1
        elif value.startswith("(") and value.endswith(")") and value.count("(") == 1:
            s, e = 1, e - 1  # parentheses around the whole thing are prose, not the number
        if value[s:e].count(".") == 3 and _ipv4(value[s:e]):
            return []  # a dotted quad is an IPv4 address, not a phone number
        # (the parentheses cut off are not digits: value[s:e] has the same digit groups)
        groups = _groups(value)
        if _phone_ok(value[s:e], region, national, [(a - s, b - s) for a, b in groups] if s else groups):
            return [(s, e)]
        # a run of numbers: try windows of whole digit groups, longest first
        windows: list[tuple[int, int, int, int]] = []
        for i in range(len(groups)):
            total = 0
            for j in range(i, len(groups)):
                total += groups[j][1] - groups[j][0]
                if total > 15:
                    break
                if total < 7 or (i, j) == (0, len(groups) - 1):
                    continue
                ws, we = groups[i][0], groups[j][1]
                if ws > 0 and value[ws - 1] in "+(":
                    ws -= 1
                if quick and value[ws] != "+" and total not in national:
                    continue  # _phone_ok refuses it first thing (its digits are groups i..j)
                if we < len(value) and value[we] == ")" and "(" in value[ws:we]:
                    we += 1
                windows.append((ws, we, i, j))
        windows.sort(key=lambda w: w[0] - w[1])
        for ws, we, i, j in windows:
            # the digit groups of the window are groups i..j
            if _phone_ok(value[ws:we], region, national, [(a - ws, b - ws) for a, b in groups[i:j + 1]]):
                return [(ws, we)]
        return []
    return check


# ---------------------------------------------------------------- detectors

_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_DIGITS = frozenset(b"0123456789")


@dataclass(frozen=True)
class _Spec:
    entity: str
    pattern: str
    hints: tuple[bytes, ...] = ()           # scan only if one of these occurs
    hint_reach: int | None = None             # every match contains a hint that starts at most
                                              # this many bytes after the match start (0: every
                                              # match starts with a hint): the scan jumps from hint
                                              # to hint.  Only where RE2 has no literal prefix to
                                              # skip ahead with itself (an alternation, "@")
    validate: Validator | None = None
    bad_before: frozenset[int] = frozenset()  # bytes that may not precede the span
    bad_after: frozenset[int] = frozenset()   # bytes that may not follow it
    joiners: frozenset[int] = frozenset()     # byte + digit after the span: part of a longer token
    not_after: tuple[bytes, ...] = ()         # words that make the span something else ("version")
    loose_end: bool = False                   # the candidate may run on over separators: only
                                              # the validated spans' ends are checked


def _b(chars: str) -> frozenset[int]:
    return frozenset(chars.encode())


_WORD = _ALNUM | _b("_")
_VERSION_WORDS = (b"version", b"build", b"release", b"firmware", b"ver.", b"ver")


def _builtin_specs(region: str) -> dict[str, _Spec]:
    key_edge = _WORD | _b("-")
    specs = [
        _Spec("private_key",
              r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----(?:[^\x00]*?-----END [A-Z0-9 ]{0,40}"
              r"PRIVATE KEY( BLOCK)?-----|[A-Za-z0-9+/=\s\\:,\-]*)"
              # the tail of a key whose BEGIN line is elsewhere (another block or message)
              r"|[A-Za-z0-9+/=\s\\]{16,}-----END [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----",
              hints=(b"PRIVATE KEY",)),
        _Spec("jwt", r"eyJ[A-Za-z0-9_\-]*(?:\r?\n[A-Za-z0-9_\-]+)*(?:\r?\n)?\.(?:\r?\n)?"
                     r"e(?:\r?\n)?y(?:\r?\n)?J[A-Za-z0-9_\-]*(?:\r?\n[A-Za-z0-9_\-]+)*(?:\r?\n)?\.(?:\r?\n)?"
                     r"[A-Za-z0-9_\-]+(?:\r?\n[A-Za-z0-9_\-]+)*",
              hints=(b"eyJ",), validate=_jwt, bad_before=key_edge, bad_after=key_edge),
        _Spec("anthropic_key", r"sk-ant-[A-Za-z0-9_\-]+(?:\r?\n[A-Za-z0-9_\-]+)*", validate=_key(27),
              hints=(b"sk-ant-",), bad_before=key_edge),
        _Spec("openai_key", r"sk-[A-Za-z0-9_\-]+(?:\r?\n[A-Za-z0-9_\-]+)*",
              hints=(b"sk-",), validate=_openai, bad_before=key_edge),
        _Spec("aws_access_key", r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])(?:[ \t\r\n./\-]?[A-Z0-9]){16}",
              hints=(b"A",), validate=_aws, bad_before=_WORD, bad_after=_WORD),
        _Spec("github_token", r"(?:gh[pousr]_(?:[A-Za-z0-9]{36,251}|(?:[ \t\r\n./\-]?[A-Za-z0-9]){36})"
                              r"|github_pat_[A-Za-z0-9_]+(?:\r?\n[A-Za-z0-9_]+)*)",
              hints=(b"gh", b"github_pat_"), validate=_github, bad_before=_WORD, bad_after=_WORD),
        _Spec("slack_token",
              r"(?:xox[abposre]-[A-Za-z0-9\-]{10,}(?:\r?\n[A-Za-z0-9\-]+)*|https://hooks\.slack\.com/(?:services|workflows)/"
              r"[A-Za-z0-9_/]{10,})",
              hints=(b"xox", b"https://hooks.slack.com/"), hint_reach=0, validate=_key(14), bad_before=_WORD),
        _Spec("credit_card", r"\d(?:(?:[ \t\n./\-]|\r\n| [\-./] )?\d){11,}", hints=(),
              validate=_card, bad_before=_WORD | _b("-.,/"), bad_after=_WORD,
              joiners=_b(".,-/"), loose_end=True),
        _Spec("iban", r"[A-Z]{2}[ \t\r\n./\-]{0,3}\d(?:[ \t\r\n./\-]{0,3}\d)(?:[ \t\r\n./\-]{0,3}[A-Z0-9]){11,36}",
              validate=_iban_value,
              bad_before=_WORD, bad_after=_WORD, loose_end=True),
        _Spec("us_ssn", r"\d{3}[ \t\r\n./\-]{1,3}\d{2}[ \t\r\n./\-]{1,3}\d{4}", validate=_ssn_value,
              bad_before=_WORD | _b("-./+$"), bad_after=_WORD, joiners=_b(".,-/")),
        _Spec("email", r"[A-Za-z0-9._%+\-]{1,64}[ \t]{0,2}(?:\r?\n)?[ \t]{0,2}@[ \t]{0,2}(?:\r?\n)?[ \t]{0,2}[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,63}",
              hints=(b"@",), hint_reach=70, validate=_email, bad_after=_WORD | _b("-")),
        _Spec("ipv6",
              r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.\d{1,3}){3})?",
              hints=(b":",), validate=_ipv6, bad_before=_WORD | _b(":."), bad_after=_WORD,
              joiners=_b(":.")),
        _Spec("ipv4", r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", hints=(b".",), validate=_ipv4,
              bad_before=_WORD | _b("."), bad_after=_WORD, joiners=_b("."), not_after=_VERSION_WORDS),
        _Spec("phone", r"(?:\+|\()?\d(?:(?:[ \t\n./\-]|\r\n| [\-./] )?\(?\d\)?){6,17}", validate=_phone(region),
              bad_before=_WORD | _b("-./:@#$,"), bad_after=_WORD | _b("@"), joiners=_b(".,-/:"),
              not_after=_VERSION_WORDS),
    ]
    return {s.entity: s for s in specs}


# google-re2's Python ``finditer`` builds a match object per match; the detectors only need
# the spans, so they call the compiled RE2 object underneath directly (the same engine and
# semantics: ``tests/unit/test_redact_fastpaths.py`` checks it against ``finditer``).
_RAW_MATCH = hasattr(re2.compile("a"), "_regexp") and hasattr(re2, "_Anchor")
_UNANCHORED = re2._Anchor.UNANCHORED if _RAW_MATCH else None
_ANCHOR_START = re2._Anchor.ANCHOR_START if _RAW_MATCH else None
# RE2.Match(anchor, data, start, end): the spans of the match and its groups, (-1, -1) for none
_RawMatch = Callable[[Any, bytes, int, int], Sequence[Span]]


_ALL_BYTES = frozenset(range(256))
_CATEGORY_BYTES = {
    "CATEGORY_DIGIT": frozenset(b"0123456789"),
    "CATEGORY_SPACE": frozenset(b" \t\n\r\f\v"),  # RE2's \s has no \v: a superset is safe
    "CATEGORY_WORD": frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"),
}


def _alphabet(pattern: str) -> frozenset[int] | None:
    """The bytes a match of ``pattern`` (a built-in detector's) can consist of, read from
    its parse tree; None (any byte) for a negated class, a flag or anything else unusual."""
    def chars(code: int) -> frozenset[int]:
        return frozenset(chr(code).encode("utf-8"))

    def walk(tree: Iterable[tuple[Any, Any]]) -> frozenset[int] | None:
        """``tree``: (opcode, argument) pairs; the argument's type depends on the opcode."""
        out: set[int] = set()
        for op, arg in tree:
            if op is _sre.LITERAL:
                out |= chars(arg)
            elif op is _sre.IN:
                for iop, iarg in arg:
                    if iop is _sre.LITERAL:
                        out |= chars(iarg)
                    elif iop is _sre.RANGE and iarg[1] < 128:
                        out |= set(range(iarg[0], iarg[1] + 1))
                    elif iop is _sre.CATEGORY and str(iarg) in _CATEGORY_BYTES:
                        out |= _CATEGORY_BYTES[str(iarg)]
                    else:
                        return None
            elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
                sub = walk(arg[2])
                if sub is None:
                    return None
                out |= sub
            elif op is _sre.SUBPATTERN:
                if arg[1] or arg[2]:
                    return None  # flags (case, dot-all...)
                sub = walk(arg[3])
                if sub is None:
                    return None
                out |= sub
            elif op is _sre.BRANCH:
                for branch in arg[1]:
                    sub = walk(branch)
                    if sub is None:
                        return None
                    out |= sub
            elif op is _sre.CATEGORY and str(arg) in _CATEGORY_BYTES:
                out |= _CATEGORY_BYTES[str(arg)]
            else:
                return None
        return frozenset(out)

    try:
        found = walk(_parser.parse(pattern))
    except Exception:
        return None
    return None if found is None or found == _ALL_BYTES else found


class _Compiled:
    __slots__ = ("spec", "regex", "priority", "classes", "_match", "alphabet")

    def __init__(self, spec: _Spec, priority: int, classes: frozenset[str]):
        opts = re2.Options()
        opts.never_capture = True
        opts.max_mem = 64 << 20
        self.spec = spec
        self.regex = re2.compile(spec.pattern.encode(), opts)
        self.priority = priority
        self.classes = classes
        self._match: _RawMatch | None = self.regex._regexp.Match if _RAW_MATCH else None
        # what a match can consist of (None: anything); custom patterns are not read
        self.alphabet = _alphabet(spec.pattern) if spec.entity in _CLASSES else None

    def spans(self, data: bytes) -> list[Span]:
        """The spans ``self.regex.finditer(data)`` yields (leftmost-first, non-overlapping),
        found with fewer engine calls where the spec's hints allow it."""
        spec = self.spec
        match = self._match
        if match is None:
            if spec.hints and not any(h in data for h in spec.hints):
                return []
            return [m.span() for m in self.regex.finditer(data)]
        if spec.hint_reach is not None:
            return self._spans_at_hints(match, data, spec.hints, spec.hint_reach)
        if spec.hints and not any(h in data for h in spec.hints):
            return []
        n, pos = len(data), 0
        out: list[Span] = []
        while True:
            sp = match(_UNANCHORED, data, pos, n)[0]
            if sp[0] < 0:
                return out
            out.append(sp)
            if sp[1] == pos:  # an empty match: step over it, as finditer does
                if pos == n:
                    return out
                pos += 1
            else:
                pos = sp[1]

    @staticmethod
    def _spans_at_hints(match: _RawMatch, data: bytes, hints: tuple[bytes, ...],
                        reach: int) -> list[Span]:
        """Every match contains a hint starting at most ``reach`` bytes into it, so no match
        starts before (next hint - reach): the search resumes there, not at the last match's
        end (for reach 0: an anchored match at each hint)."""
        where: list[int] = []
        for h in hints:
            i = data.find(h)
            while i >= 0:
                where.append(i)
                i = data.find(h, i + 1)
        if not where:
            return []
        if len(hints) > 1:
            where = sorted(set(where))
        n, pos = len(data), 0
        out: list[Span] = []
        for p in where:
            if p < pos:
                continue  # inside the last match (or before the resumed search)
            if reach == 0:
                sp = match(_ANCHOR_START, data, p, n)[0]
                if sp[0] < 0:
                    continue
            else:
                start = max(pos, p - reach)
                sp = match(_UNANCHORED, data, start, n)[0]
                if sp[0] < 0:
                    return out  # no match anywhere after start
            out.append(sp)
            pos = sp[1] if sp[1] > sp[0] else sp[1] + 1
        return out


_SET_MAX_BYTES = 16 * 1024


def _pattern_set(patterns: list[str]) -> re2.Set | None:
    """An RE2 Set of the empty pattern (index 0, it matches every text: a Set answer without
    it is an engine error) and ``patterns`` (index i + 1); None when RE2 refuses it."""
    opts = re2.Options()
    opts.never_capture = True
    opts.max_mem = 64 << 20
    rset = re2.Set.SearchSet(opts)
    try:
        rset.Add(b"")
        for pattern in patterns:
            rset.Add(pattern.encode())
        rset.Compile()
    except re2.error:
        return None
    return rset


class Detector:
    """A compiled set of detectors; thread-safe and reusable."""

    def __init__(self, entities: Sequence[str] | None = None,
                 custom_patterns: Iterable[CustomPattern] = (),
                 phone_region: str = "US"):
        region = phone_region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {phone_region!r}")
        specs = _builtin_specs(region)
        wanted = list(BUILTIN_ENTITIES) if entities is None else list(entities)
        unknown = [e for e in wanted if e not in specs]
        if unknown:
            raise ValueError(f"unknown entity types: {', '.join(sorted(unknown))}")
        self.classes: dict[str, frozenset[str]] = {}
        self._detectors: list[_Compiled] = []
        for entity in BUILTIN_ENTITIES:
            if entity in wanted:
                self._add(specs[entity], _CLASSES[entity])
        for cp in custom_patterns:
            if not _NAME_RE.search(cp.name) or cp.name in specs or cp.name in self.classes:
                raise ValueError(f"invalid custom pattern name {cp.name!r}")
            if not _NAME_RE.search(cp.data_class):
                raise ValueError(f"invalid data class for custom pattern {cp.name!r}")
            try:
                self._add(_Spec(cp.name, cp.pattern), frozenset({cp.data_class}))
            except re2.error:
                raise ValueError(f"invalid custom pattern {cp.name!r}") from None
        self._set = _pattern_set([d.spec.pattern for d in self._detectors])

    def _add(self, spec: _Spec, classes: frozenset[str]) -> None:
        self._detectors.append(_Compiled(spec, len(self._detectors), classes))
        self.classes[spec.entity] = classes

    def _present(self, data: bytes) -> list[_Compiled]:
        """The detectors worth running on ``data``: on a short text, one RE2 Set pass says
        which patterns match anywhere in it, and a pattern that matches nowhere has no
        candidates (on a long text nearly every pattern matches, and the pass is not worth it)."""
        if self._set is None or len(data) > _SET_MAX_BYTES:
            return self._detectors
        hit = self._set.Match(data)
        if not hit or 0 not in hit:  # the always-matching sentinel is missing: an RE2 error
            return self._detectors
        return [d for d in self._detectors if d.priority + 1 in hit]

    @property
    def entities(self) -> list[str]:
        return [d.spec.entity for d in self._detectors]

    def candidates(self, text: str) -> list[tuple[int, Found]]:
        """Every valid span of every detector, overlaps included: (priority, Found)."""
        return self.candidates_utf8(text.encode("utf-8"), len(text))

    def can_join(self, joints: Iterable[bytes | None]) -> set[int] | None:
        """The detectors (priorities) whose matches can hold one of ``joints`` (the bytes
        around a boundary; None: unknown) whole; None when that is every detector."""
        sets = []
        for j in joints:
            if j is None:
                return None
            sets.append(frozenset(j))
        out = {d.priority for d in self._detectors
               if d.alphabet is None or any(j <= d.alphabet for j in sets)}
        return None if len(out) == len(self._detectors) else out

    def candidates_utf8(self, data: bytes, n_chars: int,
                        parts: tuple[list[int], list[int]] | None = None,
                        only: set[int] | None = None) -> list[tuple[int, Found]]:
        """``candidates`` of the text whose UTF-8 is ``data`` (``n_chars`` characters long).

        ``parts``: the (starts, ends) byte offsets of the strings that ``data`` joins, when
        only candidates reaching into two of them are wanted: a match that does not is
        dropped before it is validated (the valid spans a validator cuts from it lie
        inside it, so none of them could).  ``only``: run just these detectors (priorities)."""
        ascii_only = len(data) == n_chars
        out: list[tuple[int, Found]] = []
        for det in self._present(data):
            if only is not None and det.priority not in only:
                continue
            spec = det.spec
            validate = spec.validate
            check_end = not spec.loose_end
            for s, e in det.spans(data):
                if s == e or not _edges_ok(data, s, e, spec, check_end):
                    continue  # part of a longer token: neither it nor a piece of it counts
                if parts is not None and not _reaches_two(parts, s, e):
                    continue
                value = data[s:e].decode("utf-8", errors="replace")
                spans = validate(value) if validate else [(0, len(value))]
                if not spans:
                    continue
                plain = value.isascii()  # str offsets are byte offsets
                for vs, ve in spans:
                    # validators work on str: map their offsets back to bytes
                    if plain:
                        bs, be = s + vs, s + ve
                    else:
                        bs = s + len(value[:vs].encode())
                        be = s + len(value[:ve].encode())
                    if not _edges_ok(data, bs, be, spec):
                        continue
                    out.append((det.priority, Found(spec.entity, bs, be, value[vs:ve])))
        if not ascii_only and out:
            out = _to_str_offsets(data, out)
        return out

    def find(self, text: str) -> list[Found]:
        """Non-overlapping findings sorted by position (longest span wins)."""
        return resolve(self.candidates(text))


def _reaches_two(parts: tuple[list[int], list[int]], s: int, e: int) -> bool:
    """Does [s, e) overlap two of the ordered, disjoint ranges (starts[i], ends[i])?"""
    starts, ends = parts
    i = bisect.bisect_right(ends, s)  # the first range ending after s
    return i + 1 < len(starts) and starts[i + 1] < e


def _edges_ok(data: bytes, s: int, e: int, spec: _Spec, check_end: bool = True) -> bool:
    if s > 0 and data[s - 1] in spec.bad_before:
        return False
    if spec.not_after and data[max(0, s - 16):s].rstrip(b" :=").lower().endswith(spec.not_after):
        return False
    if check_end and e < len(data):
        nxt = data[e]
        if nxt in spec.bad_after:
            return False
        if nxt in spec.joiners and e + 1 < len(data) and data[e + 1] in _DIGITS:
            return False
    return True


def _to_str_offsets(data: bytes, found: list[tuple[int, Found]]) -> list[tuple[int, Found]]:
    """Byte offsets -> str offsets in one pass over ``data``."""
    order = sorted(range(len(found)), key=lambda i: found[i][1].start)
    out: list[tuple[int, Found]] = list(found)
    pos_b = pos_c = 0
    for i in order:
        p, f = found[i]
        pos_c += len(data[pos_b:f.start].decode("utf-8", errors="replace"))
        pos_b = f.start
        out[i] = (p, Found(f.entity, pos_c, pos_c + len(f.value), f.value))
    return out


def resolve(cands: list[tuple[int, Found]]) -> list[Found]:
    """Keep the longest span among overlapping ones; ties: lower priority number.

    Candidates are cut into clusters of transitively overlapping spans (one
    sort), and the greedy longest-first choice runs inside each small cluster.
    """
    cands = sorted(cands, key=lambda pf: (pf[1].start, pf[1].end))
    out: list[Found] = []
    cluster: list[tuple[int, Found]] = []
    cluster_end = -1
    for pf in cands + [(0, Found("", 1 << 62, 1 << 62, ""))]:  # sentinel flushes the last one
        if cluster and pf[1].start >= cluster_end:
            if len(cluster) == 1:
                out.append(cluster[0][1])
            else:
                taken: list[Found] = []
                for _, f in sorted(cluster, key=lambda c: (c[1].start - c[1].end, c[0], c[1].start)):
                    if all(f.end <= t.start or f.start >= t.end for t in taken):
                        taken.append(f)
                out.extend(sorted(taken, key=lambda f: f.start))
            cluster = []
        cluster.append(pf)
        cluster_end = max(cluster_end, pf[1].end) if len(cluster) > 1 else pf[1].end
    return out


@functools.lru_cache(maxsize=64)
def cached_detector(entities: tuple[str, ...] | None, custom: tuple[CustomPattern, ...],
                    phone_region: str) -> Detector:
    """One compiled Detector per distinct configuration."""
    return Detector(entities, custom, phone_region)
