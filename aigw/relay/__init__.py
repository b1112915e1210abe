"""The relay: the response side of the gateway, inside the plugin-server process.

Kong proxies each AI request here (an ordinary upstream on loopback); the
relay looks up the request's context by its signed ticket, calls the
provider, streams the answer back chunk by chunk, reads usage, translates,
restores redacted values and adds the ``X-AI-*`` headers.  It makes no
policy decisions: everything it does was decided in the access phase.
"""
