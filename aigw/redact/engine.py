"""Request scanning: detection, actions (redact/mask/hash/block/allow) and prompt guard.

``scan_request`` scans every string of a request body a model can read (see
``fields.py``), normalised (``normalize.py``) and across the boundaries of the
running text, decides all replacements first and only then writes them into the body,
so an exception never leaves a half-redacted body behind (the caller fails
closed on any exception).
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import re2

from .. import schema
from .detect import (
    BUILTIN_ENTITIES,
    SECRET_ENTITIES,
    CustomPattern,
    Detector,
    Found,
    cached_detector,
    looks_random,
    resolve,
)
from .fields import BadShape, walk
from .fields import ScanTooLarge as ScanTooLarge  # re-exported: the scan's public error
from .fields import Slot as _Slot
from .normalize import Normalized, normalize, warm_up

ACTIONS = ("redact", "mask", "hash", "block", "allow")
APIS = ("chat", "embeddings", "completions", "anthropic")
DEFAULT_MAX_SCAN_BYTES: int = schema.default("ai-redact", "max_scan_bytes")
# strings (values and keys) one request may hold; more is refused (413), not scanned slowly
DEFAULT_MAX_SCAN_STRINGS: int = schema.default("ai-redact", "max_scan_strings")
# the engine's defaults are ai-redact's, from its JSON Schema (the one source of config defaults)
_DEFAULT: dict[str, Any] = schema.defaults("ai-redact")
# data-class keys in ``actions`` are consulted in this order after the entity itself
_CLASS_ORDER = ("secret", "financial", "pii")


@dataclass
class RedactConfig:
    actions: dict[str, str] = field(default_factory=dict)
    entities: list[str] = field(default_factory=lambda: list(BUILTIN_ENTITIES))
    custom_patterns: list[CustomPattern] = field(default_factory=list)
    restore: bool = False
    deny_patterns: list[str] = field(default_factory=list)
    allow_patterns: list[str] = field(default_factory=list)
    allow_all_conversation_history: bool = False  # Kong's name: True = guard only the last prompt
    match_all_roles: bool = False                 # guard every role, not only "user"
    phone_region: str = "US"
    hash_salt: str = ""
    max_scan_bytes: int = DEFAULT_MAX_SCAN_BYTES
    max_scan_strings: int = DEFAULT_MAX_SCAN_STRINGS

    def __post_init__(self) -> None:
        for key, action in self.actions.items():
            if action not in ACTIONS:
                raise ValueError(f"invalid action {action!r} for {key!r}")
        if self.max_scan_bytes <= 0:
            raise ValueError("max_scan_bytes must be positive")
        # compile now so a bad config is refused when it is loaded
        known = set(self.detector.entities) | set(_CLASS_ORDER) | {"default"}
        known |= {cp.data_class for cp in self.custom_patterns}
        unknown = sorted(k for k in self.actions if k not in known)
        if unknown:
            raise ValueError(f"actions name unknown entity types: {', '.join(unknown)}")
        self._guard()
        warm_up()  # the normaliser's character class, built once per process (~30 ms)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> RedactConfig:
        custom = [CustomPattern(name=str(p["name"]), pattern=str(p["pattern"]),
                                data_class=str(p.get("data_class") or p.get("class") or "custom"))
                  for p in cfg.get("custom_patterns") or ()]
        entities = cfg.get("entities")
        return cls(
            actions=dict(cfg.get("actions") or {}),
            entities=list(BUILTIN_ENTITIES) if entities is None else list(entities),
            custom_patterns=custom,
            restore=bool(cfg.get("restore", _DEFAULT["restore"])),
            deny_patterns=list(cfg.get("deny_patterns") or ()),
            allow_patterns=list(cfg.get("allow_patterns") or ()),
            allow_all_conversation_history=bool(cfg.get("allow_all_conversation_history",
                                                        _DEFAULT["allow_all_conversation_history"])),
            match_all_roles=bool(cfg.get("match_all_roles", _DEFAULT["match_all_roles"])),
            phone_region=str(cfg.get("phone_region") or _DEFAULT["phone_region"]),
            hash_salt=str(cfg.get("hash_salt") or ""),
            max_scan_bytes=int(cfg.get("max_scan_bytes") or DEFAULT_MAX_SCAN_BYTES),
            max_scan_strings=int(cfg.get("max_scan_strings") or DEFAULT_MAX_SCAN_STRINGS),
        )

    @functools.cached_property
    def detector(self) -> Detector:
        return cached_detector(tuple(self.entities), tuple(self.custom_patterns), self.phone_region)

    def _guard(self) -> _Guard:
        return _compile_guard(tuple(self.deny_patterns), tuple(self.allow_patterns))

    def action_for(self, entity: str) -> str:
        if entity in self.actions:
            return self.actions[entity]
        classes = self.detector.classes.get(entity, frozenset())
        for cls_name in _CLASS_ORDER:
            if cls_name in classes and cls_name in self.actions:
                return self.actions[cls_name]
        for cls_name in sorted(classes):
            if cls_name in self.actions:
                return self.actions[cls_name]
        return self.actions.get("default", "redact")


@dataclass
class ScanResult:
    counts: dict[str, int] = field(default_factory=dict)
    data_classes: set[str] = field(default_factory=set)
    blocked: list[str] = field(default_factory=list)
    guard_denied: str | None = None
    restore_map: dict[str, str] = field(default_factory=dict)
    changed: bool = False


# ---------------------------------------------------------------- guard

@dataclass(frozen=True)
class _Guard:
    deny: tuple[Any, ...]
    allow: tuple[Any, ...]


@functools.lru_cache(maxsize=64)
def _compile_guard(deny: tuple[str, ...], allow: tuple[str, ...]) -> _Guard:
    def comp(kind: str, i: int, pattern: str) -> Any:
        try:
            return re2.compile(pattern)
        except re2.error:
            raise ValueError(f"invalid {kind}_patterns[{i}] (RE2 syntax required)") from None
    return _Guard(tuple(comp("deny", i, p) for i, p in enumerate(deny)),
                  tuple(comp("allow", i, p) for i, p in enumerate(allow)))


def _guard_verdict(guard: _Guard, text: str) -> str | None:
    if any(rx.search(text) for rx in guard.deny):
        return "deny_pattern"
    if guard.allow and not any(rx.search(text) for rx in guard.allow):
        return "no_allow_pattern_matched"
    return None


def _guard_text(cfg: RedactConfig, slots: list[_Slot]) -> str:
    """The prompt text the guard checks, like Kong's ai-prompt-guard."""
    by_msg: dict[int, list[str]] = {}
    for s in slots:
        if s.guard and (cfg.match_all_roles or s.role == "user"):
            by_msg.setdefault(s.msg, []).append(s.text)
    if not by_msg:
        return ""
    order = sorted(by_msg, reverse=True)  # latest first, as Kong does
    if cfg.allow_all_conversation_history:
        order = order[:1]
    return " ".join(" ".join(by_msg[m]) for m in order)


# ---------------------------------------------------------------- replacements

def _placeholder_tag(entity: str) -> str:
    return entity.upper()


def mask_value(entity: str, value: str) -> str:
    """Partial masking; see docs/redact-core.md for the formats."""
    if entity == "email":
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if entity in ("ipv4", "ipv6"):
        sep = "." if entity == "ipv4" and ":" not in value else ":"
        head, _, tail = value.rpartition(sep)
        return "".join("*" if ch.isalnum() else ch for ch in head) + sep + tail
    if entity == "private_key":
        return value.split("\n", 1)[0][:64] + "********"
    if entity in SECRET_ENTITIES:
        return value[:4] + "********"
    # cards, phones, SSNs, IBANs, custom: keep the last 4 letters/digits and separators
    keep, out = 4, []
    for ch in reversed(value):
        if ch.isalnum():
            out.append(ch if keep > 0 else "*")
            keep -= 1
        else:
            out.append(ch)
    return "".join(reversed(out))


def hash_value(entity: str, value: str, salt: str) -> str:
    digest = hmac.new(salt.encode(), f"{entity}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"<{_placeholder_tag(entity)}_HASH_{digest[:12]}>"


_TAG = re.compile(r"<[A-Z0-9_]{1,80}>")


class _Numbering:
    """Same value -> same placeholder within one request; skips tags already in the text."""

    def __init__(self, texts: list[str]):
        # tags the prompt already contains (one pass), never handed out again
        self._taken = {tag for t in texts if "<" in t for tag in _TAG.findall(t)}
        self._seen: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self._seen:
            n = self._next.get(entity, 0)
            while True:
                n += 1
                tag = f"<{_placeholder_tag(entity)}_{n}>"
                if tag not in self._taken:
                    break
            self._next[entity] = n
            self._seen[key] = tag
        return self._seen[key]


# ---------------------------------------------------------------- finding

# A value split across two strings is looked for in a window on each side of the
# boundary: BOUNDARY_WINDOW characters (longer than an address, a number or a key),
# widened to the whole unbroken token touching the boundary (a long JWT), up to
# MAX_BOUNDARY_WINDOW.  Private keys are found as their BEGIN and END halves instead.
BOUNDARY_WINDOW = 320
MAX_BOUNDARY_WINDOW = 8192
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.+/=%~:@\r\n"
# How adjacent strings are joined when looking across their boundary: directly
# ("jane.doe@" + "example.com") and as a line break, which the number and key
# detectors read as a separator ("4111 1111" + "1111 1111").
_JOINERS = ("", "\n")
_SEP = "\x00"  # between strings in the one text all detectors scan: nothing matches across it
_SEP_B = _SEP.encode()


@dataclass
class _Hit:
    """A finding in original offsets: ``pieces`` = [(slot index, start, end)], in order."""
    entity: str
    priority: int
    pieces: list[tuple[int, int, int]]
    value: str


def _find(detector: Detector, slots: list[_Slot],
          datas: list[bytes] | None = None) -> tuple[list[_Hit], list[_Hit]]:
    """(findings inside one string, findings across a boundary of the running text).

    ``datas``: the slots' texts in UTF-8, when the caller has them."""
    if datas is None:
        datas = [s.text.encode("utf-8") for s in slots]
    norms = [normalize(s.text, d) for s, d in zip(slots, datas, strict=True)]
    texts = [n.text for n in norms]
    hits: list[_Hit] = []
    # 1. every string on its own, in one detector pass over all of them (a text that
    # normalisation left as it was is scanned in the bytes already encoded)
    joined = _SEP_B.join(n.text.encode("utf-8") if n.changed else d for n, d in zip(norms, datas, strict=True))
    starts = _offsets(texts, 1)
    for prio, f in detector.candidates_utf8(joined, max(0, sum(map(len, texts)) + len(texts) - 1)):
        i = bisect.bisect_right(starts, f.start) - 1
        s, e = f.start - starts[i], f.end - starts[i]
        os_, oe = norms[i].span(s, e)
        hits.append(_Hit(f.entity, prio, [(i, os_, oe)], slots[i].text[os_:oe]))
    # 2. across the boundaries of the running text (parts, blocks, messages in order)
    stream = [i for i, s in enumerate(slots) if s.stream]
    cross: list[_Hit] = []
    if len(stream) > 1:
        st_texts = [texts[i] for i in stream]
        by_slot: dict[int, list[_Hit]] = {}
        for h in hits:
            by_slot.setdefault(h.pieces[0][0], []).append(h)
        for joiner in _JOINERS:
            cross.extend(h for h in _across(detector, slots, norms, stream, st_texts, joiner)
                         if _extends_ok(h, by_slot, slots))
    return hits, cross


def _extends_ok(h: _Hit, by_slot: dict[int, list[_Hit]], slots: list[_Slot]) -> bool:
    """A value across a boundary that overlaps a value found inside one string is kept
    only when it continues a secret with more random characters ("sk-...abc" + "Def9...");
    "x@example.org" + "again" stays the address it was."""
    for i, s, e in h.pieces:
        for own in by_slot.get(i, ()):
            _, os_, oe = own.pieces[0]
            if os_ < e and s < oe:
                if own.entity != h.entity or h.entity not in SECRET_ENTITIES:
                    return False
                rest = [slots[j].text[a:b] for j, a, b in h.pieces if j != i]
                if not all(looks_random(r.strip()) for r in rest):
                    return False
    return True


def _offsets(texts: list[str], sep: int) -> list[int]:
    out, pos = [], 0
    for t in texts:
        out.append(pos)
        pos += len(t) + sep
    return out


def _across(detector: Detector, slots: list[_Slot], norms: list[Normalized], stream: list[int],
            texts: list[str], joiner: str) -> list[_Hit]:
    full = joiner.join(texts)
    starts = _offsets(texts, len(joiner))
    ends = [st + len(t) for st, t in zip(starts, texts, strict=True)]
    # windows around each boundary, merged where they overlap
    ranges: list[list[int]] = []
    joints: list[set[bytes | None]] = []  # per range: the bytes at each of its boundaries (None: unknown)
    for b in range(len(texts) - 1):
        tail = texts[b][-MAX_BOUNDARY_WINDOW:]
        head = texts[b + 1][:MAX_BOUNDARY_WINDOW]
        left = max(BOUNDARY_WINDOW, len(tail) - len(tail.rstrip(_TOKEN_CHARS)) + 64)
        right = max(BOUNDARY_WINDOW, len(head) - len(head.lstrip(_TOKEN_CHARS)) + 64)
        lo, hi = max(0, ends[b] - left), min(len(full), starts[b + 1] + right)
        # a value reaching into both strings holds the last character of one, the joiner
        # and the first of the next (a string normalised to nothing: any byte may follow)
        joint = (texts[b][-1:] + joiner + texts[b + 1][:1]).encode("utf-8") \
            if texts[b] and texts[b + 1] else None
        if ranges and lo <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], hi)
            joints[-1].add(joint)
        else:
            ranges.append([lo, hi])
            joints.append({joint})
    out: list[_Hit] = []
    for (lo, hi), joint_set in zip(ranges, joints, strict=True):
        only = detector.can_join(joint_set)
        if only is not None and not only:
            continue  # no detector can reach across these joints
        window = full[lo:hi]
        data = window.encode("utf-8")
        for prio, f in detector.candidates_utf8(data, len(window),
                                                _byte_parts(window, data, starts, ends, lo, hi), only):
            gs, ge = lo + f.start, lo + f.end
            first = bisect.bisect_right(starts, gs) - 1
            last = bisect.bisect_right(starts, ge - 1) - 1
            if first == last and ge <= ends[first]:
                continue  # inside one string: found on its own already
            pieces = []
            for k in range(first, last + 1):
                s, e = max(gs, starts[k]), min(ge, ends[k])
                if s >= e:
                    continue
                i = stream[k]
                os_, oe = norms[i].span(s - starts[k], e - starts[k])
                if os_ < oe:
                    pieces.append((i, os_, oe))
            if len(pieces) > 1:
                value = "".join(slots[i].text[a:b] for i, a, b in pieces)
                out.append(_Hit(f.entity, prio, pieces, value))
    return out


def _byte_parts(window: str, data: bytes, starts: list[int], ends: list[int],
                lo: int, hi: int) -> tuple[list[int], list[int]]:
    """The (starts, ends) UTF-8 byte offsets in ``window`` (= full[lo:hi], encoded as
    ``data``) of the strings it overlaps, clipped to it."""
    bs: list[int] = []
    be: list[int] = []
    k = bisect.bisect_right(ends, lo)
    while k < len(starts) and starts[k] < hi:
        bs.append(max(starts[k], lo) - lo)
        be.append(min(ends[k], hi) - lo)
        k += 1
    if len(data) != len(window):  # not ASCII: character offsets -> byte offsets
        pos_c = pos_b = 0
        conv: dict[int, int] = {}
        for x in sorted(set(bs) | set(be)):
            pos_b += len(window[pos_c:x].encode("utf-8"))
            pos_c = x
            conv[x] = pos_b
        bs = [conv[x] for x in bs]
        be = [conv[x] for x in be]
    return bs, be


def _resolve(own: list[_Hit], cross: list[_Hit]) -> list[_Hit]:
    """Non-overlapping hits.  Inside a string the longest span wins (``detect.resolve``);
    a value across a boundary is kept when no longer one overlaps it, and then replaces
    the findings inside the strings it covers (a secret it continues)."""
    taken: dict[int, list[tuple[int, int]]] = {}

    def free(h: _Hit) -> bool:
        return all(e <= a or s >= b for i, s, e in h.pieces for a, b in taken.get(i, ()))

    kept: list[_Hit] = []
    for h in sorted(cross, key=lambda h: (-sum(e - s for _, s, e in h.pieces), h.priority)):
        if free(h):
            kept.append(h)
            for i, s, e in h.pieces:
                taken.setdefault(i, []).append((s, e))
    by_slot: dict[int, list[tuple[int, Found]]] = {}
    for n, h in enumerate(own):
        i, s, e = h.pieces[0]
        by_slot.setdefault(i, []).append((h.priority, Found(str(n), s, e, "")))
    for cands in by_slot.values():
        for f in resolve(cands):
            h = own[int(f.entity)]
            if free(h):
                kept.append(h)
    kept.sort(key=lambda h: h.pieces[0][:2])  # placeholders numbered in reading order
    return kept


def scan_request(cfg: RedactConfig, api: str, body: dict[str, Any]) -> ScanResult:
    """Scan a request body; apply redact/mask/hash in place unless something is blocked."""
    if not isinstance(body, dict):
        raise BadShape("The request body must be a JSON object.")
    w = walk(api, body, cfg.max_scan_strings)
    slots = w.slots
    datas = [s.text.encode("utf-8") for s in slots]
    if sum(map(len, datas)) > cfg.max_scan_bytes:
        raise ScanTooLarge()

    result = ScanResult()
    guard = cfg._guard()
    if guard.deny or guard.allow:
        result.guard_denied = _guard_verdict(guard, _guard_text(cfg, slots))
        if result.guard_denied:
            return result

    detector = cfg.detector
    hits = _resolve(*_find(detector, slots, datas))
    numbering = _Numbering([s.text for s in slots])
    blocked: set[str] = set()
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for h in hits:
        result.counts[h.entity] = result.counts.get(h.entity, 0) + 1
        result.data_classes |= detector.classes[h.entity]
        action = cfg.action_for(h.entity)
        if action == "allow":
            continue
        if action == "block":
            blocked.add(h.entity)
            continue
        if action == "redact":
            repl = numbering.placeholder(h.entity, h.value)
            if cfg.restore:
                result.restore_map[repl] = h.value
        elif action == "mask":
            repl = mask_value(h.entity, h.value)
        else:
            repl = hash_value(h.entity, h.value, cfg.hash_salt)
        # a value split over several strings: the replacement goes where it starts; a
        # string the value fills completely keeps the replacement too (never left empty)
        for n, (i, s, e) in enumerate(h.pieces):
            whole = s == 0 and e == len(slots[i].text)
            edits.setdefault(i, []).append((s, e, repl if n == 0 or whole else ""))

    if blocked:
        result.blocked = sorted(blocked)
        result.restore_map = {}
        return result

    new_texts: dict[int, str] = {}
    for i, spans in edits.items():
        text, pieces, last = slots[i].text, [], 0
        for s, e, repl in sorted(spans):
            pieces.append(text[last:s])
            pieces.append(repl)
            last = e
        pieces.append(text[last:])
        new_texts[i] = "".join(pieces)

    # 1. values (inside parsed JSON strings and in the body), 2. keys (after the values,
    # which are written under the old key), 3. JSON strings re-serialised
    renames: dict[int, tuple[dict[str, Any], dict[str, str]]] = {}
    writes = 0
    for i, new in new_texts.items():
        slot = slots[i]
        if slot.owner is not None:
            slot.owner.dirty = True
        if slot.is_key:
            renames.setdefault(id(slot.parent), (slot.parent, {}))[1][slot.key] = new
        else:
            slot.parent[slot.key] = new
            writes += 1
    for obj, names in renames.values():  # rebuilt in place, order kept
        items = list(obj.items())
        obj.clear()
        obj.update((names.get(k, k), v) for k, v in items)
    for doc in w.jsons:
        if doc.dirty:
            doc.parent[doc.key] = orjson.dumps(doc.holder[0]).decode()
    result.changed = bool(writes or renames)
    return result
