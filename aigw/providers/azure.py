"""Azure OpenAI: the OpenAI payload on a per-deployment URL with ``api-key`` auth."""
from __future__ import annotations

from urllib.parse import quote

from aigw.providers.openai import OpenAIAdapter
from aigw.types import ProviderConfig

DEFAULT_API_VERSION = "2024-10-21"


class AzureAdapter(OpenAIAdapter):
    """``model`` is the deployment name; ``provider.base_url`` is the resource
    endpoint, e.g. ``https://my-resource.openai.azure.com``."""

    type = "azure"

    def _url(self, model: str, provider: ProviderConfig, op: str) -> str:
        version = provider.api_version or DEFAULT_API_VERSION
        return (f"{provider.base_url.rstrip('/')}/openai/deployments/{quote(model, safe='')}"
                f"/{op}?api-version={quote(version, safe='')}")

    def chat_url(self, model: str, provider: ProviderConfig) -> str:
        return self._url(model, provider, "chat/completions")

    def embeddings_url(self, model: str, provider: ProviderConfig) -> str:
        return self._url(model, provider, "embeddings")

    def auth(self, provider: ProviderConfig) -> dict[str, str]:
        return {"api-key": provider.api_key} if provider.api_key else {}
