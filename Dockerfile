# mcp-oauthd: OAuth 2.1 authorization server for MCP servers.
#   docker build -t mcp-oauthd .
#   docker run -p 8080:8080 -v mcp-oauthd:/var/lib/mcp-oauthd \
#     -v $PWD/config.yaml:/etc/mcp-oauthd/config.yaml:ro mcp-oauthd
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MCP_OAUTHD_CONFIG=/etc/mcp-oauthd/config.yaml

RUN groupadd --system --gid 10001 mcp-oauthd \
 && useradd --system --uid 10001 --gid mcp-oauthd --home-dir /var/lib/mcp-oauthd \
      --shell /usr/sbin/nologin mcp-oauthd \
 && mkdir -p /var/lib/mcp-oauthd /etc/mcp-oauthd \
 && chown mcp-oauthd:mcp-oauthd /var/lib/mcp-oauthd

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mcp_oauthd ./mcp_oauthd
RUN pip install . && rm -rf /src

# State (SQLite database, generated keys) lives here; mount a volume to keep it.
VOLUME ["/var/lib/mcp-oauthd"]
WORKDIR /var/lib/mcp-oauthd
USER mcp-oauthd
EXPOSE 8080

# Liveness only (GET /healthz); readiness is /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["mcp-oauthd"]
CMD ["serve"]
