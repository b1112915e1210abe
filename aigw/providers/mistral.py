"""Mistral La Plateforme (``https://api.mistral.ai/v1``): OpenAI-like, with differences.

Request: ``max_completion_tokens`` -> ``max_tokens``, ``seed`` -> ``random_seed``;
fields Mistral rejects are dropped (``stream_options`` — Mistral puts usage on
its last chunk unasked —, ``user``, ``logit_bias``, ``logprobs``, ``store``…);
tool-call ids are rewritten to the 9-character alphanumeric form Mistral
requires (stable hash, applied to assistant ``tool_calls`` and ``tool``
messages alike, so ids issued by other providers survive a failover).
"""
from __future__ import annotations

import hashlib
import re
import string
from typing import Any

from aigw.providers.openai import OpenAIAdapter

_DROP = ("stream_options", "user", "logit_bias", "logprobs", "top_logprobs", "store",
         "metadata", "service_tier", "modalities", "audio", "reasoning_effort",
         "functions", "function_call", "web_search_options")
_ID_OK = re.compile(r"^[A-Za-z0-9]{9}$")
_ALPHABET = string.ascii_letters + string.digits


def mistral_tool_id(call_id: str) -> str:
    """A stable 9-character [A-Za-z0-9] id for any tool-call id."""
    if _ID_OK.match(call_id):
        return call_id
    n = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return "".join(out)


def _fix_tool_ids(messages: list[Any]) -> list[Any]:
    fixed = []
    for original in messages:
        if not isinstance(original, dict):
            fixed.append(original)
            continue
        msg = dict(original)
        if isinstance(msg.get("tool_calls"), list):
            msg["tool_calls"] = [
                {**tc, "id": mistral_tool_id(tc["id"])}
                if isinstance(tc, dict) and isinstance(tc.get("id"), str) else tc
                for tc in msg["tool_calls"]]
        if isinstance(msg.get("tool_call_id"), str):
            msg["tool_call_id"] = mistral_tool_id(msg["tool_call_id"])
        fixed.append(msg)
    return fixed


class MistralAdapter(OpenAIAdapter):
    type = "mistral"
    max_output_field = "max_tokens"

    def chat_body(self, body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        out = super().chat_body(body, model, stream=stream)
        for key in _DROP:
            out.pop(key, None)
        if "max_completion_tokens" in out:
            mct = out.pop("max_completion_tokens")
            out.setdefault("max_tokens", mct)
        if "seed" in out:
            out.setdefault("random_seed", out.pop("seed"))
        if isinstance(out.get("messages"), list):
            out["messages"] = _fix_tool_ids(out["messages"])
        return out

    def embeddings_body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k not in ("user", "dimensions")}
        if "dimensions" in body:
            out["output_dimension"] = body["dimensions"]
        out["model"] = model
        return out
