"""OpenAI-compatible servers: vLLM, Ollama (/v1), llama.cpp server, Groq, LM Studio…

``base_url`` should include the API version path (``http://vllm:8000/v1``,
``https://api.groq.com/openai/v1``).  A bare origin (``http://ollama:11434``)
gets ``/v1`` appended; any other path is used as given.  ``stream_options`` is
always sent when streaming; servers that ignore it stream without usage, and the
decoder's ``usage`` then stays None (the relay counts tokens itself).
"""
from __future__ import annotations

from aigw.providers.openai import OpenAIAdapter


class OpenAICompatibleAdapter(OpenAIAdapter):
    type = "openai_compatible"
    max_output_field = "max_tokens"  # what vLLM, llama.cpp, Ollama, LM Studio all read
