"""Kong plugin `ai-cost`: Prices requests, adds cost headers and enforces spend budgets.

kong-python-pluginserver loads this module; the feature is its stage
`aigw.gateway.cost.CostStage`. Reference: docs/plugins/ai-cost.md.
"""
from aigw.gateway.cost import CostStage
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-cost", CostStage, 770)
