"""Provider adapters behind one interface (see base.Adapter) and their registry."""
from __future__ import annotations

from aigw.providers.anthropic import AnthropicAdapter
from aigw.providers.azure import AzureAdapter
from aigw.providers.base import (
    Adapter,
    NotSupported,
    ProviderProtocolError,
    StreamDecoder,
    UpstreamStreamError,
)
from aigw.providers.bedrock import BedrockAdapter
from aigw.providers.gemini import GeminiAdapter
from aigw.providers.mistral import MistralAdapter
from aigw.providers.openai import OpenAIAdapter
from aigw.providers.openai_compatible import OpenAICompatibleAdapter
from aigw.providers.vertex import VertexAdapter

ADAPTERS: dict[str, Adapter] = {a.type: a for a in (
    OpenAIAdapter(), AzureAdapter(), AnthropicAdapter(), GeminiAdapter(), MistralAdapter(),
    OpenAICompatibleAdapter(), BedrockAdapter(), VertexAdapter())}


def get_adapter(provider_type: str, /) -> Adapter:
    """The adapter for a provider type; KeyError names the unknown type."""
    try:
        return ADAPTERS[provider_type]
    except KeyError:
        raise KeyError(f"unknown provider type {provider_type!r}") from None


__all__ = ["ADAPTERS", "Adapter", "NotSupported", "ProviderProtocolError", "StreamDecoder",
           "UpstreamStreamError", "get_adapter"]
