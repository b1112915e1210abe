"""What the mock answers, independent of any provider's wire format.

Everything here is a pure function of the request: the reply text, the tool
call decision, the token counts and the faults named in the model id.
"""
from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

CREATED = 1_700_000_000  # fixed "created" timestamp: bodies stay byte-identical
CHUNK_CHARS = 4  # characters of reply per stream event
PER_MESSAGE = 3  # prompt tokens added per message (system prompt counts as one)
CACHE_WRITE = 10  # anthropic cache_creation_input_tokens for "cached" models
THOUGHTS = 10  # reasoning tokens for "thinking" models
TOOL_ARGS = {"city": "Paris"}
TOOL_ARGS_JSON = '{"city": "Paris"}'
CUT_AFTER = 2  # content events sent before a "fault-cut" stream is dropped
EMBEDDING_DIM = 8


@dataclass(frozen=True)
class Faults:
    """Behaviour switches read from the provider-side model name."""

    status: int | None = None
    slow_ms: int = 0
    stream_delay_ms: int = 0
    cut: bool = False
    no_usage: bool = False
    cached: bool = False
    thinking: bool = False
    # OpenAI wire only (issue 13): misbehaving servers seen in the field
    drop: bool = False          # read the request, then close the connection without answering
    empty: bool = False         # stream: 200, then only [DONE]
    early_done: bool = False    # stream: 200, a role chunk, then [DONE] (no token, no finish reason)
    stream_error: int | None = None  # stream: 200, then llama.cpp's "error: {...}" line with this code
    invalid_500: bool = False   # 500 whose body says it is a validation error
    overproduce: bool = False  # ignores max_tokens and writes OVERPRODUCE_WORDS words


OVERPRODUCE_WORDS = 400  # words an "overproduce" model writes per choice, whatever max_tokens says
_STATUS = re.compile(r"fault-([1-5]\d\d)")
_SLOW = re.compile(r"(?<!stream-)slow-(\d+)")
_DELAY = re.compile(r"stream-delay-(\d+)")
_STREAM_ERROR = re.compile(r"fault-stream-error-(\d\d\d)")


@lru_cache(maxsize=4096)
def parse_faults(model: str) -> Faults:
    status = _STATUS.search(model)
    slow = _SLOW.search(model)
    delay = _DELAY.search(model)
    stream_error = _STREAM_ERROR.search(model)
    return Faults(
        status=int(status.group(1)) if status else None,
        slow_ms=int(slow.group(1)) if slow else 0,
        stream_delay_ms=int(delay.group(1)) if delay else 0,
        cut="fault-cut" in model,
        no_usage="no-usage" in model,
        cached="cached" in model,
        thinking="thinking" in model,
        drop="fault-drop" in model,
        empty="fault-empty" in model,
        early_done="fault-early-done" in model,
        stream_error=int(stream_error.group(1)) if stream_error else None,
        invalid_500="fault-invalid-500" in model,
        overproduce="overproduce" in model,
    )


def words(text: str) -> int:
    """Whitespace-separated words: the mock's notion of a token."""
    return len(text.split())


@dataclass(frozen=True)
class Prompt:
    """What the mock needs to know about a request's conversation."""

    words: int  # words of all text carried: system, messages, tool results
    messages: int  # messages, the system prompt counting as one
    last_user_text: str  # text of the last user message that has text
    after_tool_result: bool  # the conversation ends with a tool result
    tool: str | None  # name of the first tool offered, if any

    @property
    def tokens(self) -> int:
        return self.words + PER_MESSAGE * self.messages


@dataclass(frozen=True)
class Reply:
    text: str  # "" when the reply is a tool call
    tool: str | None = None  # name of the tool called

    @property
    def tokens(self) -> int:
        return words(TOOL_ARGS_JSON if self.tool else self.text)


def plan_reply(prompt: Prompt) -> Reply:
    """``REPLY:<text>`` → ``<text>``; ``CALL_TOOL`` with tools → tool call; else echo."""
    text = prompt.last_user_text
    if prompt.tool and "CALL_TOOL" in text and not prompt.after_tool_result:
        return Reply("", prompt.tool)
    if "REPLY:" in text:
        return Reply(text.split("REPLY:", 1)[1])
    return Reply("Echo: " + text)


_WORD = re.compile(r"\S+")


def limit_reply(reply: Reply, max_tokens: object, faults: Faults) -> tuple[Reply, bool]:
    """Honour the request's max output (in the mock's tokens: words), as real providers do:
    the reply is cut after that many words and the choice ends with "length". An
    ``overproduce`` model ignores it and writes OVERPRODUCE_WORDS words. Returns (reply, cut)."""
    if reply.tool:
        return reply, False
    if faults.overproduce:
        base = reply.text.split() or ["more"]
        return Reply(" ".join(base[i % len(base)] for i in range(OVERPRODUCE_WORDS))), False
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return reply, False
    found = list(_WORD.finditer(reply.text))
    if len(found) <= max_tokens:
        return reply, False
    return Reply(reply.text[:found[max_tokens - 1].end()]), True


@dataclass(frozen=True)
class Counts:
    """Token counts in OpenAI semantics (prompt includes cache reads)."""

    prompt: int
    completion: int  # visible reply tokens, reasoning excluded
    cache_read: int
    reasoning: int


def count(prompt: Prompt, reply: Reply, faults: Faults, choices: int = 1) -> Counts:
    p = prompt.tokens
    return Counts(
        prompt=p,
        completion=reply.tokens * choices,
        cache_read=p // 2 if faults.cached else 0,
        reasoning=THOUGHTS if faults.thinking else 0,
    )


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def embedding(text: str) -> list[float]:
    """A unit vector of dimension 8 derived from SHA-256 of the text."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [v / 32767.5 - 1.0 for v in struct.unpack("<8H", digest[:16])]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in raw]


def string_values(value: object) -> list[str]:
    """All strings inside a JSON value (tool results given as objects)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_values(v)]
    if isinstance(value, list):
        return [s for v in value for s in string_values(v)]
    return []
