"""Request scanning: detection, actions (redact/mask/hash/block/allow) and prompt guard.

``scan_request`` finds every string of a request body that carries prompt
text, decides all replacements first and only then writes them into the body,
so an exception never leaves a half-redacted body behind (the caller fails
closed on any exception).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import re2

from aigw.errors import GatewayError

from .detect import BUILTIN_ENTITIES, SECRET_ENTITIES, CustomPattern, Detector, Found, cached_detector

ACTIONS = ("redact", "mask", "hash", "block", "allow")
APIS = ("chat", "embeddings", "completions", "anthropic")
DEFAULT_MAX_SCAN_BYTES = 4 * 1024 * 1024
# data-class keys in ``actions`` are consulted in this order after the entity itself
_CLASS_ORDER = ("secret", "financial", "pii")


class ScanTooLarge(GatewayError):
    """The prompt is bigger than ``max_scan_bytes``: refused, never half-scanned."""

    def __init__(self) -> None:
        super().__init__(413, "Request too large to be scanned for sensitive data.",
                         code="redact_scan_limit")


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

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "RedactConfig":
        custom = [CustomPattern(name=str(p["name"]), pattern=str(p["pattern"]),
                                data_class=str(p.get("data_class") or p.get("class") or "custom"))
                  for p in cfg.get("custom_patterns") or ()]
        entities = cfg.get("entities")
        return cls(
            actions=dict(cfg.get("actions") or {}),
            entities=list(BUILTIN_ENTITIES) if entities is None else list(entities),
            custom_patterns=custom,
            restore=bool(cfg.get("restore", False)),
            deny_patterns=list(cfg.get("deny_patterns") or ()),
            allow_patterns=list(cfg.get("allow_patterns") or ()),
            allow_all_conversation_history=bool(cfg.get("allow_all_conversation_history", False)),
            match_all_roles=bool(cfg.get("match_all_roles", False)),
            phone_region=str(cfg.get("phone_region") or "US"),
            hash_salt=str(cfg.get("hash_salt") or ""),
            max_scan_bytes=int(cfg.get("max_scan_bytes") or DEFAULT_MAX_SCAN_BYTES),
        )

    @functools.cached_property
    def detector(self) -> Detector:
        return cached_detector(tuple(self.entities), tuple(self.custom_patterns), self.phone_region)

    def _guard(self) -> "_Guard":
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


# ---------------------------------------------------------------- body walking

@dataclass
class _Slot:
    """One string to scan: where it lives and who said it."""
    parent: Any               # dict or list holding the string
    key: Any                  # key or index in parent
    text: str
    msg: int = -1             # message index (for the guard), -1 = not a message
    role: str | None = None
    guard: bool = False       # is this prompt text the guard looks at
    owner: "_JsonArg | None" = None  # set when the string sits inside a parsed JSON argument


@dataclass
class _JsonArg:
    """A JSON document carried in a string (tool-call arguments)."""
    parent: Any
    key: Any
    value: Any
    dirty: bool = False


class _Walker:
    def __init__(self) -> None:
        self.slots: list[_Slot] = []
        self.jsons: list[_JsonArg] = []

    def text(self, parent: Any, key: Any, msg: int = -1, role: str | None = None,
             guard: bool = False, owner: _JsonArg | None = None) -> None:
        value = parent[key]
        if isinstance(value, str) and value:
            self.slots.append(_Slot(parent, key, value, msg, role, guard, owner))

    def leaves(self, parent: Any, key: Any, owner: _JsonArg | None = None, depth: int = 0) -> None:
        """Every string leaf of a JSON value (dict keys untouched)."""
        if depth > 64:
            raise ValueError("JSON nested too deeply to scan")
        value = parent[key]
        if isinstance(value, str):
            self.text(parent, key, owner=owner)
        elif isinstance(value, dict):
            for k in value:
                self.leaves(value, k, owner, depth + 1)
        elif isinstance(value, list):
            for i in range(len(value)):
                self.leaves(value, i, owner, depth + 1)

    def json_string(self, parent: Any, key: Any) -> None:
        """A string holding JSON: scan its string leaves, or the raw text if it is not JSON."""
        raw = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(raw, str) or not raw:
            return
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.text(parent, key)
            return
        arg = _JsonArg(parent, key, doc)
        self.jsons.append(arg)
        holder = [doc]
        arg.value = holder
        self.leaves(holder, 0, owner=arg)

    def parts(self, parent: Any, key: Any, msg: int, role: str | None, anthropic: bool) -> None:
        """Message content: a string or a list of parts/blocks."""
        content = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(content, str):
            self.text(parent, key, msg, role, guard=True)
            return
        if not isinstance(content, list):
            return
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                self.text(part, "text", msg, role, guard=True)
            elif anthropic and kind == "tool_use" and "input" in part:
                self.leaves(part, "input")
            elif anthropic and kind == "tool_result":
                self.parts(part, "content", msg, role, anthropic)
            # images, audio, files, thinking blocks: untouched


def _walk_chat(w: _Walker, body: dict) -> None:
    for i, msg in enumerate(_list(body.get("messages"))):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role") if isinstance(msg.get("role"), str) else None
        w.parts(msg, "content", i, role, anthropic=False)
        for call in _list(msg.get("tool_calls")):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                w.json_string(fn, "arguments")
        if isinstance(msg.get("function_call"), dict):
            w.json_string(msg["function_call"], "arguments")


def _walk_embeddings(w: _Walker, body: dict) -> None:
    _walk_prompt(w, body, "input")


def _walk_completions(w: _Walker, body: dict) -> None:
    _walk_prompt(w, body, "prompt")
    if isinstance(body.get("suffix"), str):
        w.text(body, "suffix")


def _walk_prompt(w: _Walker, body: dict, key: str) -> None:
    value = body.get(key)
    if isinstance(value, str):
        w.text(body, key, 0, "user", guard=True)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):  # token arrays (ints / lists of ints) untouched
                w.text(value, i, i, "user", guard=True)


def _walk_anthropic(w: _Walker, body: dict) -> None:
    if "system" in body:
        w.parts(body, "system", -1, "system", anthropic=True)
    for i, msg in enumerate(_list(body.get("messages"))):
        if isinstance(msg, dict):
            role = msg.get("role") if isinstance(msg.get("role"), str) else None
            w.parts(msg, "content", i, role, anthropic=True)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


_WALKERS: dict[str, Callable[[_Walker, dict], None]] = {
    "chat": _walk_chat, "embeddings": _walk_embeddings,
    "completions": _walk_completions, "anthropic": _walk_anthropic,
}


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


def scan_request(cfg: RedactConfig, api: str, body: dict) -> ScanResult:
    """Scan a request body; apply redact/mask/hash in place unless something is blocked."""
    walker = _WALKERS.get(api)
    if walker is None:
        raise ValueError(f"unknown api {api!r}")
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    w = _Walker()
    walker(w, body)
    slots = w.slots
    if sum(len(s.text.encode("utf-8")) for s in slots) > cfg.max_scan_bytes:
        raise ScanTooLarge()

    result = ScanResult()
    guard = cfg._guard()
    if guard.deny or guard.allow:
        result.guard_denied = _guard_verdict(guard, _guard_text(cfg, slots))
        if result.guard_denied:
            return result

    detector = cfg.detector
    found: list[list[Found]] = [detector.find(s.text) for s in slots]
    numbering = _Numbering([s.text for s in slots])
    blocked: set[str] = set()
    new_texts: list[str | None] = []
    for slot, hits in zip(slots, found):
        pieces, last = [], 0
        for f in hits:
            result.counts[f.entity] = result.counts.get(f.entity, 0) + 1
            result.data_classes |= detector.classes[f.entity]
            action = cfg.action_for(f.entity)
            if action == "allow":
                continue
            if action == "block":
                blocked.add(f.entity)
                continue
            if action == "redact":
                repl = numbering.placeholder(f.entity, f.value)
                if cfg.restore:
                    result.restore_map[repl] = f.value
            elif action == "mask":
                repl = mask_value(f.entity, f.value)
            else:
                repl = hash_value(f.entity, f.value, cfg.hash_salt)
            pieces.append(slot.text[last:f.start])
            pieces.append(repl)
            last = f.end
        if pieces:
            pieces.append(slot.text[last:])
            new_texts.append("".join(pieces))
        else:
            new_texts.append(None)

    if blocked:
        result.blocked = sorted(blocked)
        result.restore_map = {}
        return result

    # phase 1: write into parsed JSON copies; collect writes into the body
    writes: list[tuple[Any, Any, str]] = []
    for slot, new in zip(slots, new_texts):
        if new is None:
            continue
        if slot.owner is not None:
            slot.parent[slot.key] = new
            slot.owner.dirty = True
        else:
            writes.append((slot.parent, slot.key, new))
    # phase 2: re-serialise changed JSON arguments
    for arg in w.jsons:
        if arg.dirty:
            writes.append((arg.parent, arg.key, orjson.dumps(arg.value[0]).decode()))
    # phase 3: apply (plain assignments only)
    for parent, key, new in writes:
        parent[key] = new
    result.changed = bool(writes)
    return result
