"""Kong plugin `ai-redact`: Finds PII and secrets and redacts, masks, hashes or blocks them before any model sees them.

kong-python-pluginserver loads this module; the decision is made by
`aigw.gateway.redact.RedactRuntime`. Reference: docs/plugins/ai-redact.md.
"""
from aigw.gateway.redact import RedactRuntime
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-redact", RedactRuntime, 780)
