"""Kong plugin `ai-tokens`: Counts tokens and enforces token limits reserved before the call.

kong-python-pluginserver loads this module; the feature is its stage
`aigw.gateway.tokens.TokensStage`. Reference: docs/plugins/ai-tokens.md.
"""
from aigw.gateway.tokens import TokensStage
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-tokens", TokensStage, 771)
