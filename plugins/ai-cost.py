"""Kong plugin `ai-cost`: Prices requests, adds cost headers and enforces spend budgets.

Thin adapter: the decision is made by `aigw.gateway.cost.CostRuntime`; this module
only moves data between Kong's PDK and it.  Reference: docs/plugins/ai-cost.md.
"""
from aigw import schema
from aigw.gateway.cost import CostRuntime
from aigw.plugin_base import AIPlugin

version = "0.1.0"
priority = 770
Schema = schema.kong_fields("ai-cost")


class Plugin(AIPlugin):
    NAME = "ai-cost"

    def setup(self, config):
        self.rt = CostRuntime(config)

    def on_access(self, kong, ctx):
        self.load_groups(kong, ctx, self.rt.needs_groups)
        self.rt.access(ctx)
