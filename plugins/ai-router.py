"""Kong plugin `ai-router`: Routes requests by model to providers: one OpenAI-compatible API (and Anthropic Messages) over every provider.

kong-python-pluginserver loads this module; the decision is made by
`aigw.gateway.router.RouterRuntime`. Reference: docs/plugins/ai-router.md.
"""
from aigw.gateway.router import RouterRuntime
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-router", RouterRuntime, 769, anchor=True, order=775)
