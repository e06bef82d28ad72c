# syntax=docker/dockerfile:1
#
# The MCP Auth Gateway image:     docker build -t mcp-auth-gateway .
# The demo MCP server's image:    docker build --target demo -t mcp-auth-gateway-demo .
#
# Every install step is a call of deploy/docker/install.sh; CI runs the RUN lines below, read from
# this file, into a temporary directory (tests/deploy/test_container.py), so what CI installs is
# what the image holds. The image runs as user 10001 with a read-only root filesystem: config at
# /etc/mcp-gateway/gateway.yaml, secrets under /run/secrets (both mounted), nothing written
# outside /tmp (give it a tmpfs: `docker run --read-only --tmpfs /tmp ...`).

# Pinned by exact tag. Where a registry is at hand, pin the digest too
# (`docker buildx imagetools inspect python:3.11.18-slim-trixie` gives it; then
# python:3.11.18-slim-trixie@sha256:...): this file was written and is checked offline, where
# digests cannot be looked up.
ARG PYTHON_IMAGE=python:3.11.18-slim-trixie

# uv (pinned, hash-checked) and the lock: what both builders start from.
FROM ${PYTHON_IMAGE} AS lock
ENV PIP_NO_CACHE_DIR=1 \
    PATH=/opt/uv/bin:${PATH}
WORKDIR /src
COPY deploy/docker/ deploy/docker/
RUN sh deploy/docker/install.sh uv /opt/uv
COPY pyproject.toml uv.lock ./

# The gateway's venv: locked runtime dependencies first (a layer that survives code changes),
# then the gateway's own wheel.
FROM lock AS builder
RUN --mount=type=cache,target=/root/.cache/uv \
    sh deploy/docker/install.sh dependencies /opt/venv
COPY README.md ./
COPY gateway/ gateway/
RUN --mount=type=cache,target=/root/.cache/uv \
    sh deploy/docker/install.sh gateway /opt/venv

# The demo MCP server's venv (`mcp` as locked; it is no dependency of the gateway).
FROM lock AS demo-builder
RUN --mount=type=cache,target=/root/.cache/uv \
    sh deploy/docker/install.sh demo /opt/demo

# What both images run on: the same Python, a non-root user, no build tools, no uv, no caches.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 mcp \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mcp
WORKDIR /app

# The demo MCP server (compose's `demo` service): no authentication of its own, so keep it on a
# private network behind the gateway. On 0.0.0.0 it accepts any Host header.
FROM runtime AS demo
COPY --from=demo-builder /opt/demo /opt/demo
COPY examples/demo_server.py /app/demo_server.py
USER 10001:10001
EXPOSE 8001
ENTRYPOINT ["/opt/demo/bin/python", "/app/demo_server.py"]
CMD ["--host", "0.0.0.0", "--port", "8001"]

# The gateway (the default target).
FROM runtime AS gateway
LABEL org.opencontainers.image.title="MCP Auth Gateway" \
      org.opencontainers.image.description="OAuth 2.1 auth gateway for unmodified MCP servers" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH}
USER 10001:10001
EXPOSE 8080
# Liveness on the main port (MCP_GATEWAY_SERVER__PORT when set); slim has no curl, so urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MCP_GATEWAY_SERVER__PORT', '8080') + '/healthz', timeout=4)"]
ENTRYPOINT ["mcp-auth-gateway"]
CMD ["serve", "--config", "/etc/mcp-gateway/gateway.yaml"]
