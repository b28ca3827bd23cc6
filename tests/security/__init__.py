"""The security suite: one module per attack, each test naming its attack.

RFC 9700 §4 (OAuth 2.0 Security Best Current Practice), row by row:

- §4.1 Insufficient redirect URI validation: test_redirect_uri_validation
- §4.2 Credential leakage via Referer headers: test_credential_leakage_via_referer
- §4.3 Credential leakage via browser history: test_browser_history
- §4.4 Mix-up attacks: test_mix_up
- §4.5 Authorization code injection: test_code_injection
- §4.6 Access token injection: n/a (below)
- §4.7 Cross-site request forgery: test_csrf
- §4.8 PKCE downgrade: test_pkce_downgrade
- §4.9 Access token leakage at the resource server: test_token_leakage_at_resource_server
- §4.10 Misuse of stolen access tokens: test_stolen_access_tokens (in part, below)
- §4.11 Open redirection: test_open_redirection
- §4.12 307 redirect: test_307_redirect
- §4.13 TLS terminating reverse proxies: test_tls_terminating_proxies
- §4.14 Refresh token protection: test_refresh_token_protection
- §4.15 Client impersonating resource owner: test_client_impersonating_resource_owner
- §4.16 Clickjacking: test_clickjacking

Rows that do not apply, and why:

- **4.6 Access token injection**: the attack injects a stolen access token into the
  implicit or hybrid flow's authorization response. This server issues no token from the
  authorization endpoint (`response_type=code` only; `token` is refused, see
  tests/flows/test_authorize_attacks.py), so there is no response to inject into.
- **4.10, sender-constrained tokens** (mTLS, RFC 8705; DPoP, RFC 9449): not offered, so a
  stolen access token is limited by audience, scope and lifetime only; those limits are
  what test_stolen_access_tokens proves. Refresh tokens of confidential clients are
  sender-constrained by client authentication (test_refresh_token_protection).

MCP security best practices (modelcontextprotocol.io, "Security Best Practices"):

- Confused deputy: test_confused_deputy
- Token passthrough: test_token_passthrough
- Session hijacking: test_session_hijacking
- SSRF through Client ID Metadata Documents: test_cimd_ssrf (the guard itself is
  tested in tests/clients/test_ssrf_guard.py)

The hardening the attacks rely on has its own modules: rate limits and client IPs
(test_rate_limits), CORS (test_cors), the encryption key ring and its rotation
(test_encryption_key_rotation), constant-time comparison and `secrets`-only randomness
(test_secret_handling), the OpenAPI document and the schemathesis run against the live
daemon (test_openapi), and a hypothesis state machine over the token lifecycle
(test_token_lifecycle_state_machine).
"""
