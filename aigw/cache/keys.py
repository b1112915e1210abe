"""Cache keys and the cacheability rule (pure functions, no I/O).

The caller hashes the *redacted* request body: personal data never reaches
key material, and a stored answer keeps its placeholders (see docs/cache-core.md).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

KEY_VERSION = 1

# Request fields known to change the answer (OpenAI chat + Anthropic messages).
DEFAULT_VARY: tuple[str, ...] = (
    "messages", "system", "tools", "tool_choice", "parallel_tool_calls",
    "functions", "function_call", "response_format", "temperature", "top_p",
    "top_k", "n", "stop", "stop_sequences", "max_tokens", "max_completion_tokens",
    "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "reasoning_effort", "thinking", "modalities", "audio",
    "prediction", "verbosity", "web_search_options",
)

# Request fields known NOT to change the answer.  ``model`` is here because
# the resolved target (Partition.target) stands for it.  A field in neither
# list is hashed anyway: an unknown parameter can cause a miss, never a wrong hit.
NEUTRAL: tuple[str, ...] = (
    "model", "stream", "stream_options", "user", "metadata", "store",
    "service_tier", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention",
)

# cacheable() reasons
OK = "ok"
REFRESH = "refresh"            # Cache-Control: no-cache: skip lookup, store the answer
NO_STORE = "no-store"
NONDETERMINISTIC = "nondeterministic"
MULTIPLE_CHOICES = "n-not-1"
UNSUPPORTED = "unsupported-request"


@dataclass(frozen=True)
class Partition:
    """Who may share answers: one consumer (or group) on one route and target."""

    consumer: str
    route: str
    target: str  # "provider/model" after alias resolution

    def prefix(self) -> str:
        """Hex digest naming the partition; every key of it starts with this."""
        raw = orjson.dumps([self.consumer, self.route, self.target])
        return hashlib.sha256(b"aigw-partition\0" + raw).hexdigest()[:32]


def _canon(value: Any) -> Any:
    """JSON-equivalent normal form: drop nulls in objects, 1.0 -> 1."""
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _material(api: str, body: Mapping[str, Any], vary: Sequence[str]) -> dict[str, Any]:
    wanted = set(vary)
    out: dict[str, Any] = {}
    for name, value in body.items():
        if value is None or (name in NEUTRAL and name not in wanted):
            continue
        out[name] = value
    if api != "anthropic":
        # max_tokens is the deprecated spelling of max_completion_tokens
        if "max_tokens" in out and "max_completion_tokens" not in out:
            out["max_completion_tokens"] = out.pop("max_tokens")
        if out.get("n") == 1:
            del out["n"]
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    canonical: dict[str, Any] = _canon(out)
    return canonical


def cache_key(partition: Partition, api: str, body: Mapping[str, Any], *,
              vary: Sequence[str] = DEFAULT_VARY) -> str:
    """``<partition prefix>:<sha256 hex>`` of partition + normalised request.

    ``body`` must already be redacted.  Fields in ``vary`` are always hashed
    (naming a NEUTRAL field there, e.g. "user", makes it count); NEUTRAL fields
    are skipped; any other field is hashed too (fail safe).
    """
    material = {
        "v": KEY_VERSION,
        "partition": [partition.consumer, partition.route, partition.target],
        "api": api,
        "request": _material(api, body, vary),
    }
    digest = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{partition.prefix()}:{digest}"


def _cache_control(headers: Mapping[str, str]) -> set[str]:
    directives: set[str] = set()
    for name, value in headers.items():
        if name.lower() not in ("cache-control", "pragma"):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            for part in str(v).split(","):
                token = part.strip().lower().split("=", 1)[0].strip()
                if token:
                    directives.add(token)
    return directives


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def cacheable(body: Mapping[str, Any], headers: Mapping[str, str], *,
              allow_nondeterministic: bool) -> tuple[bool, str]:
    """May this request's answer be stored?  ``(ok, reason)``.

    ``(True, "refresh")`` means: do not look up, but store the fresh answer
    (``Cache-Control: no-cache`` / ``Pragma: no-cache``).  Otherwise
    ``(True, "ok")`` means look up and store.  Temperature must be 0 (an
    absent temperature is the provider default, about 1) unless
    ``allow_nondeterministic``; n must be 1; ``no-store`` always wins.
    """
    directives = _cache_control(headers)
    if "no-store" in directives:
        return False, NO_STORE
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        return False, UNSUPPORTED
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        return False, MULTIPLE_CHOICES
    if not allow_nondeterministic and _number(body.get("temperature")) != 0.0:
        return False, NONDETERMINISTIC
    if "no-cache" in directives:
        return True, REFRESH
    return True, OK
