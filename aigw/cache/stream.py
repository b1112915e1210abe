"""Turn a stored answer into stream chunks, and stream chunks into an answer.

Both sides speak canonical OpenAI chat completions: ``replay_stream`` yields
``chat.completion.chunk`` dicts (the relay SSE-encodes them) and
``assemble_stream`` folds such chunks back into one ``chat.completion``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PIECE_CHARS = 48  # characters of content (or tool arguments) per replayed chunk
_TOP_OPTIONAL = ("system_fingerprint", "service_tier")
_MESSAGE_CORE = ("role", "content", "refusal", "tool_calls", "function_call")


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def replay_stream(entry: Any, *, piece_chars: int = PIECE_CHARS,
                  include_usage: bool = True) -> list[dict[str, Any]]:
    """A stored non-stream answer (an ``Entry`` or a chat.completion dict) as chunks.

    Per choice: a role chunk, content in pieces, tool calls (head, then
    argument pieces), a finish chunk; then one usage chunk with ``choices: []``.
    """
    resp: dict[str, Any] = entry if isinstance(entry, dict) else entry.response
    usage = resp.get("usage")
    if usage is None and not isinstance(entry, dict):
        usage = entry.usage or None
    base: dict[str, Any] = {"id": resp.get("id", ""), "object": "chat.completion.chunk",
                            "created": resp.get("created", 0), "model": resp.get("model", "")}
    for name in _TOP_OPTIONAL:
        if name in resp:
            base[name] = resp[name]

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None,
              logprobs: Any = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta,
                                     "logprobs": logprobs, "finish_reason": finish}]}

    out: list[dict[str, Any]] = []
    for pos, choice in enumerate(resp.get("choices") or []):
        idx = choice.get("index", pos)
        msg = choice.get("message") or {}
        content = msg.get("content")
        head: dict[str, Any] = {"role": msg.get("role", "assistant"),
                                "content": "" if isinstance(content, str) else None}
        if "refusal" in msg:
            head["refusal"] = None
        # fields we do not stream piecewise (annotations, audio, ...) ride on the head
        head.update({k: v for k, v in msg.items() if k not in _MESSAGE_CORE})
        out.append(chunk(idx, head, logprobs=choice.get("logprobs")))
        if isinstance(content, str) and content:
            out.extend(chunk(idx, {"content": p}) for p in _pieces(content, piece_chars))
        if isinstance(msg.get("refusal"), str):
            out.extend(chunk(idx, {"refusal": p}) for p in _pieces(msg["refusal"], piece_chars))
        for n, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") or {}
            out.append(chunk(idx, {"tool_calls": [{
                "index": n, "id": call.get("id"), "type": call.get("type", "function"),
                "function": {"name": fn.get("name"), "arguments": ""}}]}))
            args = fn.get("arguments") or ""
            if args:
                out.extend(chunk(idx, {"tool_calls": [{"index": n, "function": {"arguments": p}}]})
                           for p in _pieces(args, piece_chars))
        if isinstance(msg.get("function_call"), dict):
            fc = msg["function_call"]
            out.append(chunk(idx, {"function_call": {"name": fc.get("name"), "arguments": ""}}))
            out.extend(chunk(idx, {"function_call": {"arguments": p}})
                       for p in _pieces(fc.get("arguments") or "", piece_chars) if p)
        out.append(chunk(idx, {}, finish=choice.get("finish_reason")))
    if include_usage and usage is not None:
        out.append({**base, "choices": [], "usage": usage})
    return out


def _append(target: dict[str, Any], key: str, value: Any) -> None:
    """Concatenate streamed text; ``None`` only marks the key as present."""
    if isinstance(value, str):
        prev = target.get(key)
        target[key] = (prev if isinstance(prev, str) else "") + value
    elif key not in target:
        target[key] = None


def _merge_logprobs(choice: dict[str, Any], lp: Any) -> None:
    if lp is None:
        return
    cur = choice.get("logprobs")
    if not isinstance(cur, dict) or not isinstance(lp, dict):
        choice["logprobs"] = dict(lp) if isinstance(lp, dict) else lp
        return
    for k, v in lp.items():
        if isinstance(v, list) and isinstance(cur.get(k), list):
            cur[k] = cur[k] + v
        elif v is not None or k not in cur:
            cur[k] = v


def assemble_stream(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Fold canonical chat.completion.chunk dicts into one chat.completion.

    Content and refusal are concatenated per choice, tool calls merged by
    index (arguments concatenated), the last finish_reason and usage win.
    """
    top: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    calls: dict[int, dict[int, dict[str, Any]]] = {}
    usage: Any = None
    for ch in chunks:
        if not isinstance(ch, dict):
            continue
        for name in ("id", "created", "model", *_TOP_OPTIONAL):
            if name in ch and name not in top:
                top[name] = ch[name]
        if ch.get("usage") is not None:
            usage = ch["usage"]
        for c in ch.get("choices") or []:
            idx = int(c.get("index", 0))
            choice = choices.setdefault(idx, {"index": idx, "message": {"role": "assistant"},
                                              "logprobs": None, "finish_reason": None})
            msg = choice["message"]
            delta = c.get("delta") or {}
            for key, value in delta.items():
                if key == "role":
                    msg["role"] = value or msg["role"]
                elif key in ("content", "refusal"):
                    _append(msg, key, value)
                elif key == "tool_calls":
                    for tc in value or []:
                        slot = calls.setdefault(idx, {}).setdefault(
                            int(tc.get("index", 0)),
                            {"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
                        if tc.get("id"):
                            slot["id"] = tc["id"]
                        if tc.get("type"):
                            slot["type"] = tc["type"]
                        fn = tc.get("function") or {}
                        if fn.get("name"):
                            slot["function"]["name"] = fn["name"]
                        if isinstance(fn.get("arguments"), str):
                            slot["function"]["arguments"] += fn["arguments"]
                elif key == "function_call":
                    fc = msg.setdefault("function_call", {"name": None, "arguments": ""})
                    if (value or {}).get("name"):
                        fc["name"] = value["name"]
                    if isinstance((value or {}).get("arguments"), str):
                        fc["arguments"] += value["arguments"]
                elif isinstance(value, list) and isinstance(msg.get(key), list):
                    msg[key] = msg[key] + value
                elif value is not None or key not in msg:
                    msg[key] = value
            _merge_logprobs(choice, c.get("logprobs"))
            if c.get("finish_reason") is not None:
                choice["finish_reason"] = c["finish_reason"]
    for idx, choice in choices.items():
        msg = choice["message"]
        msg.setdefault("content", None)
        if idx in calls:
            msg["tool_calls"] = [calls[idx][n] for n in sorted(calls[idx])]
    out: dict[str, Any] = {"id": top.get("id", ""), "object": "chat.completion",
                           "created": top.get("created", 0), "model": top.get("model", "")}
    for name in _TOP_OPTIONAL:
        if name in top:
            out[name] = top[name]
    out["choices"] = [choices[i] for i in sorted(choices)]
    if usage is not None:
        out["usage"] = usage
    return out
