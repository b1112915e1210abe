"""Which strings of a request a model can read: all of them, minus an explicit list.

The walker visits every string of the client's request body (values and
object keys, at any depth, known fields and unknown ones) and hands each to
the scanner, except the strings an :class:`ApiProfile` lists as not readable
by a model.  A field that an adapter starts forwarding tomorrow is therefore
scanned by default; ``tests/unit/test_redact_fields.py`` sends a sentinel in
every string field through the ingress and provider adapters and fails when
one reaches a provider payload unscanned.

An exemption names a key (the last path element) and, optionally, the key of
the object above it, and is granted only when the *value* has the expected
shape: an API enum is a short lower-case word, binary data is base64.  So an
exempt field cannot smuggle text past the scanner either: a value of any
other shape is scanned like everything else.

Adding an API shape (for example the OpenAI Responses API) is one
``register_api`` call: its exemptions, and how its prompt text is grouped into
messages for the prompt guard.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from aigw.errors import GatewayError
from aigw.ingress import anthropic as _anthropic

MAX_DEPTH = 64

# short enough that no detected value fits (GitHub tokens are 40+, keys carry "-")
_ENUM = re.compile(r"[a-z][a-z0-9_]{0,23}")
_BASE64 = re.compile(r"[A-Za-z0-9+/=_\-\s]*")
_DATA_URL = re.compile(r"data:[A-Za-z0-9.+\-]+/[A-Za-z0-9.+\-]+(?:;[A-Za-z0-9=.\-]+)*;base64,[A-Za-z0-9+/=_\-\s]*")


def enum_value(value: str, parent: dict[str, Any]) -> bool:
    """An API enum: a short lower-case word (letters, digits, ``_``)."""
    return _ENUM.fullmatch(value) is not None


def base64_data(value: str, parent: dict[str, Any]) -> bool:
    """Binary data (images, audio, PDFs): base64 only."""
    return _BASE64.fullmatch(value) is not None


def base64_source(value: str, parent: dict[str, Any]) -> bool:
    """Anthropic ``source.data``: binary only when the source says base64 (text sources are read)."""
    return parent.get("type") == _anthropic.BINARY_SOURCE and _BASE64.fullmatch(value) is not None


_MEDIA_TYPE = re.compile(r"[a-z]+/[a-z0-9.+\-]{1,80}")


def media_type(value: str, parent: dict[str, Any]) -> bool:
    return _MEDIA_TYPE.fullmatch(value) is not None


def _reasoning_field(block: str, base64_only: bool) -> Predicate:
    """The signed or opaque field of an Anthropic reasoning block of type ``block``."""
    def exempt(value: str, parent: dict[str, Any]) -> bool:
        return parent.get("type") == block and (not base64_only or _BASE64.fullmatch(value) is not None)
    return exempt


thinking_signature = _reasoning_field("thinking", base64_only=True)
redacted_thinking = _reasoning_field("redacted_thinking", base64_only=False)
# every reasoning block of the Anthropic shape (aigw/ingress/anthropic.py) with its exemption
_REASONING_EXEMPT: dict[str, Predicate] = {"thinking": thinking_signature,
                                             "redacted_thinking": redacted_thinking}


def data_url(value: str, parent: dict[str, Any]) -> bool:
    """An image given inline as a base64 data URL (a plain ``http`` URL is scanned)."""
    return value.startswith("data:") and _DATA_URL.fullmatch(value) is not None


Predicate = Callable[[str, dict[str, Any]], bool]


class ScanTooLarge(GatewayError):
    """The prompt is bigger than a scan limit (bytes, strings, time): refused (413), never
    half-scanned."""

    _WHY: ClassVar[dict[str, str]] = {"bytes": "it has more text than the scan limit",
            "strings": "it has more strings than the scan limit",
            "time": "scanning it took longer than the scan time budget"}

    def __init__(self, budget: str = "bytes") -> None:
        super().__init__(413, f"Request too large to be scanned for sensitive data: {self._WHY[budget]}. "
                              "Send a smaller request.", code="redact_scan_limit")


class BadShape(GatewayError):
    """A request the scanner cannot walk: a client error (400), never a 5xx."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(400, message, code="invalid_request", param=param)


@dataclass(frozen=True)
class ApiProfile:
    """What one client API sends: exemptions and where its prompt messages are.

    ``exempt`` maps a key, or ``"parent.key"``, to a predicate on the value.
    ``messages``: top-level keys holding the conversation (a list of message
    objects with ``role`` and ``content``); ``prompts``: top-level keys holding
    prompt text directly (a string or a list of strings), treated as user text
    by the guard; ``system``: top-level keys holding system text.
    """
    name: str
    exempt: dict[str, Predicate]
    messages: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    system: tuple[str, ...] = ()
    json_strings: frozenset[str] = frozenset()  # "parent.key" strings that hold JSON documents


# Fields of every API that a model does not read.  ``model`` is resolved by
# ai-router and replaced by the target's own model name, never forwarded.
_COMMON: dict[str, Predicate] = {
    "role": enum_value,
    "type": enum_value,
    "object": enum_value,
    "tool_choice": enum_value,
    "reasoning_effort": enum_value,
    "service_tier": enum_value,
    "encoding_format": enum_value,
    "verbosity": enum_value,
    "detail": enum_value,
    "format": enum_value,
    "voice": enum_value,
    "modalities": enum_value,
    "media_type": media_type,
    "cache_control.type": enum_value,
}

_OPENAI_EXEMPT: dict[str, Predicate] = {
    **_COMMON,
    "image_url.url": data_url,
    "input_audio.data": base64_data,
    "file.file_data": base64_data,
}

_ANTHROPIC_EXEMPT: dict[str, Predicate] = {
    **_COMMON,
    "source.data": base64_source,
    # signed / opaque reasoning: never rewritten (the gateway does not replay them to
    # other providers, and a changed signature is refused by Anthropic)
    **{_anthropic.REASONING_BLOCKS[block]: pred for block, pred in _REASONING_EXEMPT.items()},
}

# Strings that are running text (scanned across their boundaries with their neighbours):
# content, text parts and blocks, system prompts, descriptions, and strings in lists.
# Ids, names and free-form object fields are scanned each on its own.
TEXT_KEYS = frozenset({"content", "text", "system", "input", "prompt", "suffix", "description",
                       "thinking", "instructions"})

# Top-level only: ``model`` is resolved by ai-router and replaced by the target's own
# model name; the client's string is never forwarded.
TOP_LEVEL_EXEMPT = frozenset({"model"})

PROFILES: dict[str, ApiProfile] = {}


def register_api(profile: ApiProfile) -> None:
    PROFILES[profile.name] = profile


register_api(ApiProfile("chat", _OPENAI_EXEMPT, messages=("messages",),
                        json_strings=frozenset({"function.arguments", "function_call.arguments"})))
register_api(ApiProfile("embeddings", _OPENAI_EXEMPT, prompts=("input",)))
register_api(ApiProfile("completions", _OPENAI_EXEMPT, prompts=("prompt",)))
register_api(ApiProfile("anthropic", _ANTHROPIC_EXEMPT, messages=(_anthropic.MESSAGES_FIELD,),
                        system=(_anthropic.SYSTEM_FIELD,)))


@dataclass
class Slot:
    """One string to scan: where it lives and who said it."""
    parent: Any               # dict or list holding the string (for a key: the dict)
    key: Any                  # key or index in parent (for a key: the key itself)
    text: str
    msg: int = -1             # message index (for the guard), -1 = not a message
    role: str | None = None
    guard: bool = False       # prompt text the guard looks at
    owner: JsonDoc | None = None  # set when the string sits inside a parsed JSON string
    is_key: bool = False      # an object key: a replacement renames it
    stream: bool = True       # part of the running text scanned across boundaries


@dataclass
class JsonDoc:
    """A JSON document carried in a string (tool-call arguments)."""
    parent: Any
    key: Any
    holder: list[Any]         # [the parsed document]: a parent like any other for the walker
    dirty: bool = False


@dataclass
class Walk:
    slots: list[Slot] = field(default_factory=list)
    jsons: list[JsonDoc] = field(default_factory=list)
    scanned_bytes: int = 0


class _Walker:
    def __init__(self, profile: ApiProfile, max_strings: int):
        self.p = profile
        self.out = Walk()
        self.max_strings = max_strings

    def _add(self, slot: Slot) -> None:
        if len(self.out.slots) >= self.max_strings:
            raise ScanTooLarge(budget="strings")
        self.out.slots.append(slot)

    def _exempt(self, parent_key: Any, key: Any, value: str, parent: Any) -> bool:
        ex = self.p.exempt
        if not isinstance(key, str) or not isinstance(parent, dict):
            return False
        pred = ex.get(f"{parent_key}.{key}") if isinstance(parent_key, str) else None
        if pred is None:
            pred = ex.get(key)
        return pred is not None and pred(value, parent)

    def value(self, parent: Any, key: Any, parent_key: Any, depth: int, msg: int = -1,
              role: str | None = None, guard: bool = False, owner: JsonDoc | None = None) -> None:
        """Every string under ``parent[key]``."""
        if depth > MAX_DEPTH:
            raise BadShape("The request is nested too deeply to be checked for sensitive data.")
        v = parent[key]
        if isinstance(v, str):
            if not v or self._exempt(parent_key, key, v, parent):
                return
            if owner is None and isinstance(parent_key, str) and isinstance(key, str) \
                    and f"{parent_key}.{key}" in self.p.json_strings:
                self.json_string(parent, key, depth)
                return
            self._add(Slot(parent, key, v, msg, role, guard, owner,
                           stream=key in TEXT_KEYS or isinstance(key, int)))
            self.out.scanned_bytes += len(v)
        elif isinstance(v, dict):
            for k in list(v):
                if k:  # object keys are read too (JSON Schema property names, metadata keys)
                    self._add(Slot(v, k, k, owner=owner, is_key=True, stream=False))
                    self.out.scanned_bytes += len(k)
                # text parts carry the message's guard flag only through their "text"
                self.value(v, k, key, depth + 1, msg, role,
                           guard and (k in ("text", "content")), owner)
        elif isinstance(v, list):
            for i in range(len(v)):
                self.value(v, i, key, depth + 1, msg, role, guard, owner)

    def json_string(self, parent: dict[str, Any], key: str, depth: int) -> None:
        raw = parent[key]
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._add(Slot(parent, key, raw))
            self.out.scanned_bytes += len(raw)
            return
        jd = JsonDoc(parent, key, [doc])
        self.out.jsons.append(jd)
        self.value(jd.holder, 0, key, depth + 1, owner=jd)

    def body(self, body: dict[str, Any]) -> Walk:
        p = self.p
        for key in list(body):
            if key:
                self._add(Slot(body, key, key, is_key=True, stream=False))
            if key in TOP_LEVEL_EXEMPT and isinstance(body[key], str):
                continue
            if key in p.messages and isinstance(body[key], list):
                for i, msg in enumerate(body[key]):
                    role = msg.get("role") if isinstance(msg, dict) else None
                    role = role if isinstance(role, str) else None
                    if isinstance(msg, dict):
                        for k in list(msg):
                            if k:
                                self._add(Slot(msg, k, k, is_key=True, stream=False))
                            self.value(msg, k, None, 2, i, role, guard=(k == "content"))
                    else:
                        self.value(body[key], i, key, 1, i, role)
            elif key in p.prompts:
                v = body[key]
                if isinstance(v, list):
                    for i in range(len(v)):
                        self.value(v, i, key, 1, i, "user", guard=True)
                else:
                    self.value(body, key, None, 0, 0, "user", guard=True)
            elif key in p.system:
                self.value(body, key, None, 0, -1, "system", guard=True)
            else:
                self.value(body, key, None, 0)
        return self.out


def walk(api: str, body: dict[str, Any], max_strings: int) -> Walk:
    profile = PROFILES.get(api)
    if profile is None:
        raise ValueError(f"unknown api {api!r}")
    if not isinstance(body, dict):
        raise BadShape("The request body must be a JSON object.")
    return _Walker(profile, max_strings).body(body)
