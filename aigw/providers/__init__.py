"""Provider adapters behind one interface (see base.Adapter) and their registry
(``registry.PROVIDERS``: one entry per provider type)."""
from __future__ import annotations

from aigw.providers.base import (
    Adapter,
    NotSupported,
    ProviderProtocolError,
    StreamDecoder,
    UpstreamStreamError,
)
from aigw.providers.registry import PROVIDERS, TYPES, ProviderType, provider_type

ADAPTERS: dict[str, Adapter] = {name: p.adapter() for name, p in PROVIDERS.items()}


def get_adapter(type_name: str, /) -> Adapter:
    """The adapter for a provider type; KeyError names the unknown type."""
    try:
        return ADAPTERS[type_name]
    except KeyError:
        raise KeyError(f"unknown provider type {type_name!r}") from None


__all__ = ["ADAPTERS", "PROVIDERS", "TYPES", "Adapter", "NotSupported", "ProviderProtocolError",
           "ProviderType", "StreamDecoder", "UpstreamStreamError", "get_adapter", "provider_type"]
