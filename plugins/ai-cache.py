"""Kong plugin `ai-cache`: Serves exact-match answers from a cache partitioned by consumer, route and target.

Thin adapter: the decision is made by `aigw.gateway.cache.CacheRuntime`; this module
only moves data between Kong's PDK and it.  Reference: docs/plugins/ai-cache.md.
"""
from aigw import schema
from aigw.gateway.cache import CacheRuntime
from aigw.plugin_base import AIPlugin

version = "0.1.0"
priority = 772
Schema = schema.kong_fields("ai-cache")


class Plugin(AIPlugin):
    NAME = "ai-cache"

    def setup(self, config):
        self.rt = CacheRuntime(config)

    def on_access(self, kong, ctx):
        self.load_groups(kong, ctx, self.rt.needs_groups)
        self.rt.access(ctx)
