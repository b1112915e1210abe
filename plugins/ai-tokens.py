"""Kong plugin `ai-tokens`: Counts tokens and enforces token limits reserved before the call.

Thin adapter: the decision is made by `aigw.gateway.tokens.TokensRuntime`; this module
only moves data between Kong's PDK and it.  Reference: docs/plugins/ai-tokens.md.
"""
from aigw import schema
from aigw.gateway.tokens import TokensRuntime
from aigw.plugin_base import AIPlugin

version = "0.1.0"
priority = 771
Schema = schema.kong_fields("ai-tokens")


class Plugin(AIPlugin):
    NAME = "ai-tokens"

    def setup(self, config):
        self.rt = TokensRuntime(config)

    def on_access(self, kong, ctx):
        self.load_groups(kong, ctx, self.rt.needs_groups)
        self.rt.access(ctx)
