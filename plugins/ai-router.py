"""Kong plugin `ai-router`: Routes requests by model to providers: one OpenAI-compatible API (and Anthropic Messages) over every provider.

kong-python-pluginserver loads this module; the feature is its stage
`aigw.gateway.router.RouterStage`. Reference: docs/plugins/ai-router.md.
"""
from aigw.gateway.router import RouterStage
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-router", RouterStage, 769, anchor=True)
