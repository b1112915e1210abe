"""A Kong stand-in for tests and local development. It is NOT Kong.

It plays Kong 3.9's side of the external plugin protocol (kong/runloop/plugin_servers/*.lua)
against the real kong-pdk plugin server, with a small declarative config, router, bundled
key-auth / jwt / request-size-limiting and a streaming proxy. See docs/standin.md.
"""

KONG_VERSION = "3.9.1"
SERVER_TOKENS = f"kong/{KONG_VERSION}"  # kong/meta.lua _SERVER_TOKENS
