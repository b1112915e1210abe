"""The provider registry: every provider ``type`` the gateway speaks, in one table.

Everything that depends on the provider type reads it from here: the adapter
(``aigw.providers.get_adapter``), the config rules of ``aigw.routing`` (default
base URL, the type-specific fields, credentials), the ``type`` enum of
``schemas/ai-router.json`` (a test checks it against ``TYPES``), the price
catalogue's provider id (``aigw.cost.catalogue``), the OpenTelemetry provider
name of the access log (``aigw.relay.observe``) and the request signer
(``aigw.cloud_auth``).  Adding a provider is one entry here plus its adapter.
"""
from __future__ import annotations

from dataclasses import dataclass

from aigw.providers.anthropic import AnthropicAdapter
from aigw.providers.azure import AzureAdapter
from aigw.providers.bedrock import BedrockAdapter
from aigw.providers.gemini import GeminiAdapter
from aigw.providers.mistral import MistralAdapter
from aigw.providers.openai import OpenAIAdapter
from aigw.providers.openai_compatible import OpenAICompatibleAdapter
from aigw.providers.vertex import VertexAdapter

__all__ = ["ProviderType", "PROVIDERS", "TYPES", "TYPE_SPECIFIC_FIELDS", "ALL_CAPABILITIES", "provider_type",
           "BEARER", "API_KEY_HEADER", "X_API_KEY", "GOOG_API_KEY", "AWS_SIGV4", "GOOGLE_OAUTH"]

# auth kinds: how a request to the provider is authenticated
BEARER = "bearer"              # Authorization: Bearer <api_key>
API_KEY_HEADER = "api-key"     # api-key: <api_key> (Azure OpenAI)
X_API_KEY = "x-api-key"        # x-api-key: <api_key> (Anthropic)
GOOG_API_KEY = "x-goog-api-key"
AWS_SIGV4 = "aws-sigv4"        # signed by aigw.cloud_auth with botocore's credential chain
                               # (an api_key is a Bedrock API key, sent as a Bearer token instead)
GOOGLE_OAUTH = "google-oauth"  # OAuth token from google-auth (service account or ADC)

ALL_CAPABILITIES = frozenset({"chat", "stream", "tools", "vision", "embeddings"})
_CHAT_ONLY = ALL_CAPABILITIES - {"embeddings"}


@dataclass(frozen=True)
class ProviderType:
    name: str
    adapter: type
    auth: str
    capabilities: frozenset[str]       # what the adapter can serve (a model's targets must cover it)
    default_base_url: str | None = None  # None: ``base_url`` is required for this type
    catalogue_id: str | None = None    # genai-prices provider id; None: matched by base_url
    otel_name: str = ""                # OpenTelemetry gen_ai.provider.name
    required: tuple[str, ...] = ()     # type-specific fields this type needs
    optional: tuple[str, ...] = ()     # further type-specific fields it accepts
    api_key: bool = True               # accepts ``api_key`` / ``api_key_env``

    @property
    def fields(self) -> frozenset[str]:
        """The type-specific fields (``region``, ``project``, ...) this type accepts."""
        return frozenset(self.required + self.optional)


# fields of a provider entry that only the types naming them in required/optional may set
TYPE_SPECIFIC_FIELDS = ("region", "project", "credentials_file", "credentials_json")

PROVIDERS: dict[str, ProviderType] = {p.name: p for p in (
    ProviderType("openai", OpenAIAdapter, BEARER, ALL_CAPABILITIES,
                 "https://api.openai.com/v1", "openai", "openai"),
    ProviderType("azure", AzureAdapter, API_KEY_HEADER, ALL_CAPABILITIES,
                 None, "azure", "azure.ai.openai", required=("api_version",)),
    ProviderType("anthropic", AnthropicAdapter, X_API_KEY, _CHAT_ONLY,
                 "https://api.anthropic.com", "anthropic", "anthropic"),
    ProviderType("gemini", GeminiAdapter, GOOG_API_KEY, ALL_CAPABILITIES,
                 "https://generativelanguage.googleapis.com", "google", "gcp.gemini"),
    ProviderType("mistral", MistralAdapter, BEARER, ALL_CAPABILITIES,
                 "https://api.mistral.ai/v1", "mistral", "mistral_ai"),
    # a self-hosted or third-party OpenAI-compatible server: no catalogue id, so it is
    # priced only when its base_url matches a catalogue provider's API URL
    ProviderType("openai_compatible", OpenAICompatibleAdapter, BEARER, ALL_CAPABILITIES,
                 None, None, "openai"),
    ProviderType("bedrock", BedrockAdapter, AWS_SIGV4, _CHAT_ONLY,
                 None, "aws", "aws.bedrock", required=("region",)),
    ProviderType("vertex", VertexAdapter, GOOGLE_OAUTH, _CHAT_ONLY,
                 None, "google", "gcp.vertex_ai", required=("region", "project"),
                 optional=("credentials_file", "credentials_json"), api_key=False),
)}

TYPES = tuple(PROVIDERS)


def provider_type(name: str) -> ProviderType:
    """The registry entry of a type; KeyError names the unknown type."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise KeyError(f"unknown provider type {name!r}") from None
