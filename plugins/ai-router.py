"""Kong plugin `ai-router`: Routes requests by model to providers (OpenAI-compatible API over every provider).

Thin adapter: the decision is made by `aigw.gateway.router.RouterRuntime`; this module
only moves data between Kong's PDK and it.  Reference: docs/plugins/ai-router.md.
"""
from aigw import schema
from aigw.gateway.router import RouterRuntime
from aigw.plugin_base import AIPlugin

version = "0.1.0"
priority = 775
Schema = schema.kong_fields("ai-router")


class Plugin(AIPlugin):
    NAME = "ai-router"

    def setup(self, config):
        self.rt = RouterRuntime(config)

    def on_access(self, kong, ctx):
        self.load_groups(kong, ctx, self.rt.needs_groups)
        self.rt.access(ctx)

    def log(self, kong):
        self.finish_unproxied(kong)
