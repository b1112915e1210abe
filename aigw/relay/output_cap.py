"""The output cap: a provider never gets to produce more than ai-tokens/ai-cost reserved.

``ctx.output_cap`` is the output per choice that was reserved (the request's
``max_completion_tokens``/``max_tokens``, else the plugins' default; see
aigw/gateway/limits.py ``worst_case_tokens``). Here, kept apart from the relay's
stream loop so that loop only calls in:

- :func:`upstream_body` sends the cap upstream when the client set no maximum, in the
  field the adapter's provider reads (``adapter.max_output_field``);
- :class:`StreamCap` counts each choice's output as it is relayed, cuts the choice
  that reaches the cap, ends it with ``finish_reason: "length"``, and says when every
  choice has ended so the relay stops reading the provider;
- :func:`cap_response` does the same to a non-streaming answer;
- :func:`delivered_usage` is what a cut answer is reconciled to: the provider's prompt
  count with our count of the delivered output, flagged estimated.

Counting uses the model's tokenizer (aigw.tokens.counting). Where that count is an
estimate, the cap allows ``ESTIMATE_SLACK`` more, so an honest provider that stopped at
its own count is not cut short by our rougher one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..gateway.limits import output_choices
from ..tokens.counting import tokenizer_for
from ..types import Usage

ESTIMATE_SLACK = (1.2, 8)  # estimated tokenizers: cap * 1.2 + 8
_TEXT_FIELDS = ("content", "reasoning_content", "refusal")


def upstream_body(canonical: dict[str, Any], cap: int | None, adapter: Any) -> dict[str, Any]:
    """The canonical request with the reserved cap as its max output, if the client set none."""
    if not cap or not isinstance(canonical, dict):
        return canonical
    if canonical.get("max_completion_tokens") or canonical.get("max_tokens"):
        return canonical
    return {**canonical, getattr(adapter, "max_output_field", "max_tokens"): cap}


def allowed_tokens(cap: int, model: str) -> tuple[int, Callable[[str], int]]:
    """(tokens a choice may deliver by our count, the counting function) for ``model``."""
    tok = tokenizer_for(model)
    if tok.estimated:
        factor, extra = ESTIMATE_SLACK
        return int(cap * factor) + extra, tok.count
    return cap, tok.count


def _prefix_within(count: Callable[[str], int], before: str, text: str, limit: int) -> str:
    """The longest prefix p of ``text`` with count(before + p) <= limit (binary search)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(before + text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


class _Choice:
    __slots__ = ("text", "sum", "ended", "finish")

    def __init__(self) -> None:
        self.text = ""      # everything delivered so far (content, reasoning, tool arguments)
        self.sum = 0        # sum of per-piece counts: an upper bound, resynced when it passes the cap
        self.ended = False
        self.finish: str | None = None  # the provider's finish_reason ("length" from us is not kept)


def choice_tokens(text: str, finish: str | None, cap: int | None, count: Callable[[str], int]) -> int:
    """Our count of one choice's output when the provider reported none: the text's count,
    never more than the cap the provider was given, and exactly the cap when the provider
    itself said it stopped there (finish_reason "length")."""
    if cap and finish == "length":
        return cap
    n = count(text) if text else 0
    return min(n, cap) if cap else n


class StreamCap:
    """Per-choice output count and cap over canonical stream chunks (one per streamed
    chat request). Without a cap (``cap=None``) it only keeps each choice's text, so a
    stream without provider usage is counted per choice."""

    def __init__(self, cap: int | None, model: str, choices: int = 1):
        self.cap = cap or None
        self.limit: int | None
        self.count: Callable[[str], int]
        if self.cap:
            self.limit, self.count = allowed_tokens(self.cap, model)
        else:
            self.limit, self.count = None, tokenizer_for(model).count
        self.choices = max(1, choices)
        self.state: dict[int, _Choice] = {}
        self.cut = False  # some choice was cut: reconcile to what was delivered

    @classmethod
    def for_request(cls, ctx: Any, model: str) -> StreamCap | None:
        if ctx.api == "embeddings":
            return None
        return cls(ctx.output_cap, model, output_choices(ctx.canonical))

    @property
    def exhausted(self) -> bool:
        """Every choice the request asked for has been cut: stop reading the provider."""
        return self.cut and sum(1 for c in self.state.values() if c.ended) >= self.choices

    def delivered_tokens(self) -> int:
        """Output relayed so far, counted per choice (interleaved choices are not one text)."""
        return sum(choice_tokens(st.text, st.finish, self.cap, self.count) for st in self.state.values())

    def feed(self, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for c in chunks:
            kept = self._chunk(c)
            if kept is not None:
                out.append(kept)
        return out

    def _chunk(self, c: dict[str, Any]) -> dict[str, Any] | None:
        choices = c.get("choices")
        if not choices:
            return c  # usage chunk and other choice-less chunks pass
        kept = []
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            st = self.state.setdefault(ch.get("index", 0), _Choice())
            if st.ended:
                continue  # this choice was cut: nothing more of it is relayed
            if self._delta(ch, st):
                ch["finish_reason"] = "length"
                st.ended = True
                self.cut = True
            elif ch.get("finish_reason"):
                st.ended = True
                st.finish = ch["finish_reason"]
            kept.append(ch)
        if not kept:
            return None
        c["choices"] = kept
        return c

    def _delta(self, ch: dict[str, Any], st: _Choice) -> bool:
        """Apply the cap to one choice's delta in place; True when the choice hit the cap."""
        delta = ch.get("delta")
        if not isinstance(delta, dict):
            return False
        pieces: list[tuple[dict[str, Any], str]] = [(delta, k) for k in _TEXT_FIELDS
                                                   if isinstance(delta.get(k), str) and delta[k]]
        for tc in delta.get("tool_calls") or ():
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str) and fn["arguments"]:
                pieces.append((fn, "arguments"))
        hit = False
        for holder, key in pieces:
            text = holder[key]
            if self.limit is None:
                st.text += text
                continue
            if hit:
                holder[key] = ""
                continue
            n = self.count(text)
            if st.sum + n <= self.limit:
                st.sum += n
                st.text += text
                continue
            exact = self.count(st.text + text)  # the per-piece sum over-counts: check exactly
            if exact <= self.limit:
                st.sum = exact
                st.text += text
                continue
            part = _prefix_within(self.count, st.text, text, self.limit)
            holder[key] = part
            st.text += part
            st.sum = self.limit
            hit = True
        return hit


def cap_response(resp: dict[str, Any], cap: int | None, model: str) -> int | None:
    """Cut each choice of a non-streaming answer to the cap (finish_reason "length").
    Returns None when nothing was cut, else the output delivered (counted per choice)."""
    if not cap:
        return None
    limit, count = allowed_tokens(cap, model)
    cut, total = False, 0
    for ch in resp.get("choices") or ():
        msg = ch.get("message") if isinstance(ch, dict) else None
        if not isinstance(msg, dict):
            continue
        pieces: list[tuple[dict[str, Any], str]] = [(msg, k) for k in _TEXT_FIELDS
                                                   if isinstance(msg.get(k), str) and msg[k]]
        for tc in msg.get("tool_calls") or ():
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str) and fn["arguments"]:
                pieces.append((fn, "arguments"))
        n = count("".join(h[k] for h, k in pieces))
        if n <= limit:
            total += n
            continue
        before, hit = "", False
        for holder, key in pieces:
            if hit:
                holder[key] = ""  # everything after the cut is dropped
            elif count(before + holder[key]) <= limit:
                before += holder[key]
            else:
                holder[key] = _prefix_within(count, before, holder[key], limit)
                before += holder[key]
                hit = True
        ch["finish_reason"] = "length"
        cut = True
        total += count(before)
    return total if cut else None


def answer_tokens(resp: dict[str, Any], cap: int | None, model: str) -> int:
    """Our count of a non-streaming answer's output, per choice (see :func:`choice_tokens`)."""
    count = tokenizer_for(model).count
    total = 0
    for ch in resp.get("choices") or ():
        msg = ch.get("message") if isinstance(ch, dict) else None
        if not isinstance(msg, dict):
            continue
        text = "".join(msg[k] for k in _TEXT_FIELDS if isinstance(msg.get(k), str))
        for tc in msg.get("tool_calls") or ():
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                text += fn["arguments"]
        total += choice_tokens(text, ch.get("finish_reason"), cap, count)
    return total


def delivered_usage(provider: Usage | None, counted: Usage) -> Usage:
    """What a cut answer is charged: the provider's prompt side (when it reported one) and
    our count of the output actually delivered; always flagged estimated."""
    if provider is None or not provider.input_tokens:
        return dataclasses.replace(counted, estimated=True)
    return dataclasses.replace(provider, output_tokens=counted.output_tokens, reasoning_tokens=0,
                               estimated=True)
