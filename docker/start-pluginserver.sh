#!/bin/sh
# Start cmd of the one pluginserver entry that has one (Kong spawns it from a
# worker, whose environment nginx has cleared): take the AIGW_* settings from
# the container's environment (PID 1), then run kong-pdk's plugin server in
# gevent mode. All five pluginserver entries share its socket.
if [ -r /proc/1/environ ]; then
  eval "$(tr '\0' '\n' < /proc/1/environ | grep -E '^AIGW_[A-Z0-9_]+=' | sed "s/'/'\\\\''/g; s/=\(.*\)/='\1'/; s/^/export /")"
fi
exec /opt/aigw/.venv/bin/aigw-pluginserver -d /opt/aigw/plugins -p /usr/local/kong \
  --socket-name aigw.sock -g --no-lua-style
