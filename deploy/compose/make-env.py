#!/usr/bin/env python3
"""Print a deploy/.env for docker-compose.yml with fresh secrets:

    python3 compose/make-env.py > .env

MCP_OAUTHD_ENCRYPTION_KEY encrypts upstream tokens at rest (32 random bytes, base64url);
MCP_OAUTHD_COOKIE_SECRET signs browser cookies (at least 32 characters). Keep the file
private (never commit it) and keep it: a new encryption key cannot read what the old one
wrote.
"""

import base64
import secrets

print("MCP_OAUTHD_ENCRYPTION_KEY=" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
print("MCP_OAUTHD_COOKIE_SECRET=" + secrets.token_urlsafe(32))
