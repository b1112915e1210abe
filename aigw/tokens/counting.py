"""Token counts for requests and responses, exact where an offline vocabulary exists.

OpenAI models: exact ``tiktoken`` counts (model → encoding from tiktoken's own
map) plus the chat framing from OpenAI's cookbook. Llama 3 and Qwen 2/2.5/3:
exact text counts when ``quicktok-v1`` is installed. Everything else is a
declared estimate (``Count.estimated``). See docs/tokens-core.md.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import tiktoken.model

from .encodings import OFFLINE_ENCODINGS, get_encoding, get_quicktok
from .images import data_url_size, image_tokens


@dataclass(frozen=True)
class Count:
    tokens: int
    estimated: bool
    tokenizer: str  # e.g. "o200k_base", "llama3", "estimate:o200k_base", "estimate:bytes/3.5"


@dataclass(frozen=True)
class Tokenizer:
    """How one model's text is counted."""

    name: str
    estimated: bool
    count: Callable[[str], int]
    openai_framing: bool  # OpenAI chat framing and tool formula apply exactly
    func_init: int = 7  # tool formula: tokens per function definition (o200k 7, cl100k 10)


_OPENAI_LIKE = re.compile(r"^(gpt-|chatgpt-|o\d|ft:|text-embedding-|davinci|babbage|codex-|computer-use)")
_LLAMA3 = re.compile(r"llama[-_ ]?3")
_QWEN = re.compile(r"qwen[-_ ]?(2|3)")
_MISTRAL = re.compile(r"(mistral|mixtral|codestral|ministral|pixtral|magistral|devstral)")


def _tiktoken_counter(encoding: str) -> Callable[[str], int]:
    enc = get_encoding(encoding)
    encode = enc.encode_ordinary  # special-token text in prompts counts as plain text
    return lambda text: len(encode(text))


def _bytes_estimator(bytes_per_token: float) -> Callable[[str], int]:
    return lambda text: math.ceil(len(text.encode("utf-8", "surrogatepass")) / bytes_per_token)


def _openai(encoding: str, estimated: bool) -> Tokenizer:
    label = encoding if not estimated else f"estimate:{encoding}"
    return Tokenizer(label, estimated, _tiktoken_counter(encoding), not estimated,
                     10 if encoding == "cl100k_base" else 7)


def normalize_model(model: str) -> str:
    """Lower-case and drop a provider/org prefix (``openai/gpt-4o`` → ``gpt-4o``)."""
    return model.strip().lower().rsplit("/", 1)[-1]


@lru_cache(maxsize=1024)
def tokenizer_for(model: str) -> Tokenizer:
    """Resolve a model name to its tokenizer (cached per model name)."""
    name = normalize_model(model)
    try:
        encoding = tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        encoding = None
    if encoding in OFFLINE_ENCODINGS:
        return _openai(encoding, estimated=False)
    if encoding is not None:  # legacy r50k/p50k/gpt2 models: no packaged vocabulary
        return _openai("cl100k_base", estimated=True)
    if _OPENAI_LIKE.match(name):
        return _openai("o200k_base", estimated=True)
    for pattern, vocab in ((_LLAMA3, "llama3"), (_QWEN, "qwen3")):
        if pattern.search(name):
            qt = get_quicktok(vocab)
            if qt is not None:
                return Tokenizer(vocab, False, qt.count, False)
            return _openai("o200k_base", estimated=True)
    if _MISTRAL.search(name):
        return _openai("o200k_base", estimated=True)
    if "claude" in name:
        return Tokenizer("estimate:bytes/3.5", True, _bytes_estimator(3.5), False)
    return Tokenizer("estimate:bytes/4", True, _bytes_estimator(4.0), False)


def count_text(text: str, model: str) -> Count:
    tok = tokenizer_for(model)
    return Count(tok.count(text), tok.estimated, tok.name)


def count_completion_text(text: str, model: str) -> Count:
    """Completion tokens for generated text (streams that carry no usage)."""
    return count_text(text, model)


def count_embeddings(inp: str | list[Any], model: str) -> Count:
    """Embedding input: a string, a list of strings, or token arrays (counted by length)."""
    tok = tokenizer_for(model)
    items: list[Any] = [inp] if isinstance(inp, str) else inp
    if items and all(isinstance(i, int) for i in items):  # one token array
        return Count(len(items), tok.estimated, tok.name)
    total = 0
    for item in items:
        if isinstance(item, str):
            total += tok.count(item)
        elif isinstance(item, list):
            total += len(item)
    return Count(total, tok.estimated, tok.name)


# --- chat ------------------------------------------------------------------

@dataclass(frozen=True)
class Framing:
    """Tokens a model family's chat template adds around the messages.

    ``per_message``: special tokens around each message, besides its fields' text (the
    role name is counted as text, one token in all these vocabularies);
    ``reply``: the generation prompt that opens the assistant turn; ``start``: tokens
    once per conversation (BOS); ``default_system``: text the template inserts when the
    conversation has no system message (counted with the model's tokenizer, plus
    ``per_message``).
    """

    family: str
    per_message: int
    reply: int
    start: int = 0
    per_name: int = 1
    default_system: str = ""
    system_always: bool = False  # the text is in every conversation's system turn (Llama 3.1+)


# From each family's published chat template (role names are one token in every one of
# these vocabularies):
#   OpenAI (cookbook): <|start|>{role}<|message|>{content}<|end|> = 3, reply 3.
#   Llama 3.x: <|begin_of_text|> once; <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
#     = 4 + role; reply <|start_header_id|>assistant<|end_header_id|>\n\n = 4. Llama 3.1-3.3 always open
#     with a system turn carrying "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n".
#   Qwen 2/2.5/3 (ChatML): <|im_start|>{role}\n{content}<|im_end|>\n = 4 + role; reply <|im_start|>assistant\n = 3;
#     Qwen2.5 adds a default system prompt when there is none.
#   Gemma: <bos> once; <start_of_turn>{role}\n{content}<end_of_turn>\n = 4 + role; reply 3.
#   Mistral: <s> once; [INST] {content} [/INST] ... </s>: about 2 per message with no role
#     text (counted as 1 + role), reply 0.
#   Anything else (unknown template): ChatML-like 4 + role, reply 4, BOS 1.
_LLAMA31_DATE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
OPENAI_FRAMING = Framing("openai", 3, 3)


def framing_for(model: str) -> Framing:
    name = normalize_model(model)
    tok = tokenizer_for(model)
    if tok.openai_framing or _OPENAI_LIKE.match(name):
        return Framing("openai", 4, 3, per_name=-1) if name == "gpt-3.5-turbo-0301" else OPENAI_FRAMING
    if _LLAMA3.search(name):
        dated = re.search(r"llama[-_ ]?3[._-]?[123]", name) is not None
        return Framing("llama3", 4, 4, start=1, default_system=_LLAMA31_DATE if dated else "",
                       system_always=dated)
    if _QWEN.search(name):
        default = ("You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                   if re.search(r"qwen[-_ ]?2[._-]?5", name) else "")
        return Framing("chatml", 4, 3, default_system=default)
    if "gemma" in name:
        return Framing("gemma", 4, 3, start=1)
    if _MISTRAL.search(name):
        return Framing("mistral", 1, 0, start=1)
    if "claude" in name:
        return OPENAI_FRAMING  # Anthropic does not publish its framing; provider usage is used
    return Framing("generic", 4, 4, start=1)


def count_chat(body: dict[str, Any], model: str) -> Count:
    """Prompt tokens of an OpenAI chat request, as OpenAI counts them.

    Per the cookbook: 3 tokens per message, +1 per ``name``, every string
    field's text, +3 to prime the reply. Tool definitions use the cookbook's
    function formula (approximate, so flagged estimated).
    """
    tok = tokenizer_for(model)
    name = normalize_model(model)
    frame = framing_for(model)
    per_message, per_name = frame.per_message, frame.per_name
    estimated = tok.estimated or not tok.openai_framing
    total = frame.start
    messages = body.get("messages") or ()
    if frame.default_system:
        has_system = any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages)
        if not has_system:
            total += per_message + tok.count("system") + tok.count(frame.default_system)
        elif frame.system_always:
            total += tok.count(frame.default_system)
    for message in messages:
        if not isinstance(message, dict):
            estimated = True
            continue
        total += per_message
        for key, value in message.items():
            if key == "content":
                n, est = _content_tokens(value, tok, name)
                total += n
                estimated |= est
            elif key == "tool_calls":
                total += _tool_calls_tokens(value, tok)
                estimated = True  # OpenAI does not publish how these are rendered
            elif key == "function_call" and isinstance(value, dict):
                total += _call_tokens(value, tok)
                estimated = True
            elif key == "tool_call_id":
                estimated = True  # framing of tool results is not published
            elif isinstance(value, str):
                total += tok.count(value)
                if key == "name":
                    total += per_name
            elif value is not None:
                estimated = True
    total += frame.reply  # the generation prompt, e.g. <|start|>assistant<|message|>
    functions = _function_definitions(body)
    if functions:
        total += tool_definition_tokens(functions, tok.count, tok.func_init)
        estimated = True
    return Count(total, estimated, tok.name)


def _content_tokens(content: Any, tok: Tokenizer, model: str) -> tuple[int, bool]:
    if content is None:
        return 0, False
    if isinstance(content, str):
        return tok.count(content), False
    if not isinstance(content, list):
        return 0, True
    total, estimated, texts = 0, False, 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            total += tok.count(part.get("text") or "")
            texts += 1
        elif kind == "image_url":
            image = part.get("image_url") or {}
            if isinstance(image, str):
                image = {"url": image}
            url = image.get("url") or ""
            size = data_url_size(url) if url.startswith("data:") else None
            n, est = image_tokens(model, image.get("detail") or "auto", size)
            total += n
            estimated |= est
        else:  # input_audio, file, refusal ...: not countable offline
            estimated = True
    if texts > 1:
        estimated = True  # joining of several text parts is not published
    return total, estimated


def _call_tokens(call: dict[str, Any], tok: Tokenizer) -> int:
    return 3 + tok.count(str(call.get("name") or "")) + tok.count(str(call.get("arguments") or ""))


def _tool_calls_tokens(calls: Any, tok: Tokenizer) -> int:
    if not isinstance(calls, list):
        return 0
    return sum(_call_tokens(c.get("function") or {}, tok) for c in calls if isinstance(c, dict))


def _function_definitions(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = [t["function"] for t in body.get("tools") or ()
           if isinstance(t, dict) and t.get("type", "function") == "function"
           and isinstance(t.get("function"), dict)]
    out += [f for f in body.get("functions") or () if isinstance(f, dict)]
    return out


def tool_definition_tokens(functions: list[dict[str, Any]], count: Callable[[str], int],
                           func_init: int) -> int:
    """The cookbook's function-definition formula (top-level properties only)."""
    total = 0
    for fn in functions:
        total += func_init
        desc = str(fn.get("description") or "").removesuffix(".")
        total += count(f"{fn.get('name') or ''}:{desc}")
        props = (fn.get("parameters") or {}).get("properties") or {}
        if props:
            total += 3
            for key, raw_prop in props.items():
                prop = raw_prop if isinstance(raw_prop, dict) else {}
                total += 3
                enum = prop.get("enum")
                if isinstance(enum, list):
                    total += -3 + sum(3 + count(str(item)) for item in enum)
                ptype = prop.get("type") or ""
                if isinstance(ptype, list):
                    ptype = "|".join(map(str, ptype))
                pdesc = str(prop.get("description") or "").removesuffix(".")
                total += count(f"{key}:{ptype}:{pdesc}")
    return total + 12
