#!/bin/sh
# Entrypoint of the aigw image, in front of Kong's own /docker-entrypoint.sh.
#
# Kong spawns the plugin server (pluginserver_ai_redact_start_cmd) from an nginx worker, and
# nginx clears a worker's environment except TZ and the variables named by `env` directives
# (Kong 3.9.1 kong/runloop/plugin_servers/process.lua 152; nginx core module, `env`). Kong
# renders KONG_NGINX_MAIN_ENV as one `env <value>;` line in nginx.conf's main block
# (kong/templates/nginx.lua 9-12), so "A; env B" becomes `env A; env B;`.
#
# Rule: every AIGW_* (our settings), OTEL_* (the OpenTelemetry SDK's), AWS_* (botocore's
# credential chain, provider bedrock) variable and GOOGLE_APPLICATION_CREDENTIALS (google-auth,
# provider vertex) of the container reaches the plugin server, nothing else does (provider keys
# reach the plugins through Kong's vault). Mirrored by devtools/aigw_dev/standin/process.py forward_aigw_env.
# Names only go into nginx.conf; the values stay in the environment.
names=$(env | grep -oE '^((AIGW|OTEL|AWS)_[A-Za-z0-9_]*|GOOGLE_APPLICATION_CREDENTIALS)=' | tr -d '=' | sort -u | tr '\n' ' ')
list=""
for n in $names; do
  list="${list:+$list; env }$n"
done
if [ -n "$list" ]; then
  KONG_NGINX_MAIN_ENV="${KONG_NGINX_MAIN_ENV:+$KONG_NGINX_MAIN_ENV; env }$list"
  export KONG_NGINX_MAIN_ENV
fi
exec /docker-entrypoint.sh "$@"
