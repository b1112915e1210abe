"""Kong plugin `ai-cost`: Prices requests, adds cost headers and enforces spend budgets.

kong-python-pluginserver loads this module; the decision is made by
`aigw.gateway.cost.CostRuntime`. Reference: docs/plugins/ai-cost.md.
"""
from aigw.gateway.cost import CostRuntime
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-cost", CostRuntime, 770)
