"""Kong plugin `ai-cache`: Serves exact-match answers from a cache partitioned by consumer, route and target.

kong-python-pluginserver loads this module; the feature is its stage
`aigw.gateway.cache.CacheStage`. Reference: docs/plugins/ai-cache.md.
"""
from aigw.gateway.cache import CacheStage
from aigw.plugin_base import kong_plugin

Plugin, Schema, version, priority = kong_plugin("ai-cache", CacheStage, 772)
