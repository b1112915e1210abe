"""Kong plugin `ai-redact`: Finds PII and secrets and redacts, masks, hashes or blocks them before any model sees them.

Thin adapter: the decision is made by `aigw.gateway.redact.RedactRuntime`; this module
only moves data between Kong's PDK and it.  Reference: docs/plugins/ai-redact.md.
"""
from aigw import schema
from aigw.gateway.redact import RedactRuntime
from aigw.plugin_base import AIPlugin

version = "0.1.0"
priority = 780
Schema = schema.kong_fields("ai-redact")


class Plugin(AIPlugin):
    NAME = "ai-redact"

    def setup(self, config):
        self.rt = RedactRuntime(config)

    def on_access(self, kong, ctx):
        self.rt.access(ctx)
