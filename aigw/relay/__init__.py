"""The relay: the response side of the gateway, inside the plugin-server process.

Kong proxies each AI request here (an ordinary upstream on loopback); the
relay looks up the request's context by its signed ticket and runs the
request's pipeline on the answer (``app``: the engine, which knows no feature
by name): the terminal step calls the provider (``provider``: failover, output
cap; ``native``: the Anthropic pass-through), and each stage's response side
(restore, usage and cost headers, the cache's copy...) acts on what streams back.
"""
