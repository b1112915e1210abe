#!/bin/sh
# Start cmd of the one pluginserver entry that has one. Kong spawns it from an nginx worker:
# its environment is the worker's (TZ + the `env` directives docker/entrypoint.sh declares for
# every AIGW_* variable), plus PWD from this shell. All five pluginserver entries share the
# socket. The launcher binds the socket before loading the plugins (see aigw/pluginserver.py).
exec /opt/aigw/.venv/bin/aigw-pluginserver -d /opt/aigw/plugins -p /usr/local/kong \
  --socket-name aigw.sock -g --no-lua-style
