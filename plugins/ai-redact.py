"""Kong plugin `ai-redact`: Finds PII and secrets and redacts, masks, hashes or blocks them before any model sees them.

kong-python-pluginserver loads this module; the feature is its stage
`aigw.gateway.redact.RedactStage`. Reference: docs/plugins/ai-redact.md.
"""
from aigw.gateway.redact import RedactStage
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-redact", RedactStage, 780)
