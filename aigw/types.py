"""Small value types shared by the core modules (no I/O, no PDK)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    """Token usage in OpenAI semantics.

    ``input_tokens`` is the whole prompt *including* cache reads and cache
    writes; ``output_tokens`` includes reasoning tokens.  Adapters for
    providers that count differently (Anthropic reports cache reads/writes
    apart from ``input_tokens``) convert into this shape.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False  # True when counted by us, not reported by the provider

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_openai(self) -> dict[str, Any]:
        """OpenAI ``usage`` object (chat completions)."""
        out: dict[str, Any] = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }
        if self.cache_write_tokens:
            out["prompt_tokens_details"]["cache_write_tokens"] = self.cache_write_tokens
        return out

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        ptd = usage.get("prompt_tokens_details") or {}
        ctd = usage.get("completion_tokens_details") or {}
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
        completion = usage.get("completion_tokens", 0) or 0
        return cls(
            input_tokens=int(prompt),
            output_tokens=int(completion),
            cache_read_tokens=int(ptd.get("cached_tokens", 0) or 0),
            cache_write_tokens=int(ptd.get("cache_write_tokens", 0) or 0),
            reasoning_tokens=int(ctd.get("reasoning_tokens", 0) or 0),
        )

    def otel_fields(self) -> dict[str, int]:
        """OpenTelemetry GenAI semantic-convention attribute names."""
        return {
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": self.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": self.cache_write_tokens,
            "gen_ai.usage.reasoning.output_tokens": self.reasoning_tokens,
        }


@dataclass
class ProviderConfig:
    """One provider entry of the ai-router config, credentials already resolved."""

    name: str
    type: str  # openai | azure | anthropic | gemini | mistral | openai_compatible | bedrock | vertex
    base_url: str
    api_key: str | None = None
    api_version: str | None = None  # azure
    connect_timeout: float = 5.0
    first_byte_timeout: float = 30.0
    total_timeout: float = 300.0
    headers: dict[str, str] = field(default_factory=dict)  # extra static headers
    region: str | None = None  # bedrock (SigV4 scope), vertex (location)
    project: str | None = None  # vertex
    credentials_file: str | None = None  # vertex: service-account key file
    credentials_json: str | None = None  # vertex: service-account key, JSON text


@dataclass
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
