"""Google Vertex AI: Gemini models and Anthropic's Claude models on Vertex.

``base_url`` is the regional endpoint (``https://us-east5-aiplatform.googleapis.com``,
or ``https://aiplatform.googleapis.com`` for location ``global``); the provider's
``project`` and ``region`` fill the resource path::

  {base_url}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent
  …:streamGenerateContent?alt=sse
  {base_url}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict
  …:streamRawPredict

A model whose id starts with ``claude`` goes to publisher ``anthropic`` with
the Messages body minus ``model`` plus ``anthropic_version: vertex-2023-10-16``;
every other model to publisher ``google`` with the Gemini body.  Responses
and streams are the publishers' own formats, decoded by the gemini and
anthropic adapters.  Authentication (an OAuth access token from google-auth)
is added by :mod:`aigw.cloud_auth`; the adapter stays pure.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aigw.providers import base
from aigw.providers.anthropic import AnthropicAdapter, to_anthropic
from aigw.providers.base import NotSupported, bad_request
from aigw.providers.gemini import GeminiAdapter, to_gemini
from aigw.types import ProviderConfig, UpstreamRequest

ANTHROPIC_VERSION = "vertex-2023-10-16"
_GEMINI = GeminiAdapter()
_ANTHROPIC = AnthropicAdapter()


def publisher(model: str) -> str:
    return "anthropic" if model.startswith("claude") else "google"


class VertexAdapter:
    type = "vertex"

    def _url(self, model: str, provider: ProviderConfig, method: str) -> str:
        if not provider.project or not provider.region:
            raise bad_request("provider vertex needs project and region", "model")
        root = provider.base_url.rstrip("/")
        if not root.endswith("/v1"):
            root += "/v1"
        return (f"{root}/projects/{quote(provider.project, safe='')}/locations/"
                f"{quote(provider.region, safe='')}/publishers/{publisher(model)}/models/"
                f"{quote(model, safe='.-_@')}:{method}")

    def chat_request(self, body: dict[str, Any], model: str, provider: ProviderConfig, *,
                     stream: bool) -> UpstreamRequest:
        headers = base.json_headers(provider, {})
        if publisher(model) == "anthropic":
            payload = to_anthropic(body, model, stream=stream)
            del payload["model"]
            payload["anthropic_version"] = ANTHROPIC_VERSION
            method = "streamRawPredict" if stream else "rawPredict"
        else:
            payload = to_gemini(body)
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return UpstreamRequest("POST", self._url(model, provider, method), headers,
                               base.dumps(payload))

    def chat_response(self, data: bytes, model: str) -> dict[str, Any]:
        if publisher(model) == "anthropic":
            return _ANTHROPIC.chat_response(data, model)
        return _GEMINI.chat_response(data, model)

    def chat_stream(self, model: str) -> base.StreamDecoder:
        if publisher(model) == "anthropic":
            return _ANTHROPIC.chat_stream(model)
        return _GEMINI.chat_stream(model)

    def embeddings_request(self, body: dict[str, Any], model: str,
                           provider: ProviderConfig) -> UpstreamRequest:
        raise NotSupported("provider vertex serves chat only; use provider gemini for embeddings")

    def embeddings_response(self, data: bytes, model: str) -> dict[str, Any]:
        raise NotSupported("provider vertex serves chat only; use provider gemini for embeddings")

    def error_summary(self, status: int, data: bytes) -> str:
        return base.summarize_error(status, data)
