"""Kong plugin `ai-tokens`: Counts tokens and enforces token limits reserved before the call.

kong-python-pluginserver loads this module; the decision is made by
`aigw.gateway.tokens.TokensRuntime`. Reference: docs/plugins/ai-tokens.md.
"""
from aigw.gateway.tokens import TokensRuntime
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-tokens", TokensRuntime, 771)
