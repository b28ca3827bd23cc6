# syntax=docker/dockerfile:1
# mcp-oauthd: OAuth 2.1 authorization server for MCP servers.
#
#   docker build -t mcp-oauthd .
#   docker run --read-only --tmpfs /tmp -p 8080:8080 \
#     -v mcp-oauthd-state:/var/lib/mcp-oauthd \
#     -v $PWD/config.yaml:/etc/mcp-oauthd/config.yaml:ro mcp-oauthd
#
# Without a mounted config it runs the demo in deploy/docker/config.yaml (user demo/demo).
# State (SQLite database, generated keys) lives in the /var/lib/mcp-oauthd volume; nothing
# else is written, so a read-only root filesystem works. SIGTERM drains in-flight requests
# (server.shutdown_timeout). tests/deploy/test_dockerfile.py checks these properties.

# ---------------------------------------------------------------------------- builder
# Builds the mcp-oauthd wheel and the wheels of its runtime dependencies; nothing of this
# stage but /wheels reaches the image.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mcp_oauthd ./mcp_oauthd
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------------------- runtime
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="mcp-oauthd" \
      org.opencontainers.image.description="OAuth 2.1 authorization server for MCP servers" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONDONTWRITEBYTECODE: no __pycache__ writes (the root filesystem may be read-only).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MCP_OAUTHD_CONFIG=/etc/mcp-oauthd/config.yaml \
    MCP_OAUTHD_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz

RUN groupadd --system --gid 10001 mcp-oauthd \
 && useradd --system --uid 10001 --gid mcp-oauthd --no-create-home \
      --home-dir /var/lib/mcp-oauthd --shell /usr/sbin/nologin mcp-oauthd \
 && mkdir -p /var/lib/mcp-oauthd /etc/mcp-oauthd \
 && chown mcp-oauthd:mcp-oauthd /var/lib/mcp-oauthd \
 && chmod 0700 /var/lib/mcp-oauthd

# Only the built wheels, from the builder (bind-mounted: they never become a layer), and
# only the runtime dependencies: no compiler, no source tree, no test extras.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels mcp-oauthd

COPY deploy/docker/config.yaml /etc/mcp-oauthd/config.yaml

VOLUME ["/var/lib/mcp-oauthd"]
WORKDIR /var/lib/mcp-oauthd
USER 10001:10001
EXPOSE 8080

# Liveness only (GET /healthz); readiness (storage reachable) is /readyz. Set
# MCP_OAUTHD_HEALTHCHECK_URL when server.port differs from 8080.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['MCP_OAUTHD_HEALTHCHECK_URL'], timeout=4).status == 200 else 1)"]

# Exec form: mcp-oauthd is PID 1 and receives SIGTERM itself, then drains.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcp-oauthd"]
CMD ["serve"]
