# The compose demo's mock provider: dev tooling, NOT the product. It holds the aigw-dev distribution
# (devtools/) and the product it imports; the gateway image (Dockerfile) holds neither devtools/
# nor the mock.
FROM python:3.12-slim
COPY pyproject.toml setup.py README.md /src/
COPY aigw /src/aigw
COPY plugins /src/plugins
COPY schemas /src/schemas
COPY devtools /src/devtools
RUN pip install --no-cache-dir /src /src/devtools \
 && useradd --system --no-create-home mock
USER mock
ENTRYPOINT ["aigw-mock"]
CMD ["--host", "0.0.0.0", "--port", "9100", "--api-key", "mock-key"]
