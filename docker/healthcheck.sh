#!/bin/sh
# Compose healthcheck: Kong's own `kong health` is green as soon as nginx runs, before the
# plugin server has its socket or its plugins (Kong serves 500s meanwhile). Green only when
# nginx runs AND the plugin server answers an RPC on its socket.
kong health >/dev/null || exit 1
exec /opt/aigw/.venv/bin/python -m aigw.pluginserver check /usr/local/kong/aigw.sock 3
