"""The configuration model: validated once, frozen, passed in (never a global).

Every model forbids unknown keys so a misspelt key is an error, not a silently ignored
setting. Durations accept seconds (``3600``) or a suffixed string (``"1h"``, ``"30d"``).
Secrets are resolved from a source (``value`` / ``env`` / ``file``) into ``SecretStr`` so
their value never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """``3600`` / ``"3600"`` / ``"60m"`` / ``"1h"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 3600, '60m' or '1h'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("expected a duration such as 3600, '60m' or '1h'")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """Resolve a secret source into its value. Error messages never contain the value.

    ``env`` sources read the mapping passed as validation context ``{"environ": …}``
    (what ``load_config(environ=…)`` uses), else ``os.environ``.
    """
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    if isinstance(value, dict):
        keys = set(value)
        if len(keys) != 1 or not keys <= {"value", "env", "file"}:
            raise ValueError("a secret takes exactly one of 'value', 'env' or 'file'")
        if "value" in value:
            return SecretStr(str(value["value"]))
        if "env" in value:
            name = str(value["env"])
            context = info.context if isinstance(info.context, dict) else {}
            environ = context.get("environ", os.environ)
            if name not in environ:
                raise ValueError(f"environment variable {name} is not set; export it or use 'file'")
            return SecretStr(environ[name])
        path = Path(str(value["file"]))
        try:
            return SecretStr(path.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            raise ValueError(
                f"secret file {path} does not exist; create it or fix the path"
            ) from None
        except OSError as exc:
            raise ValueError(f"secret file {path} cannot be read ({exc.strerror})") from None
    raise ValueError("a secret is a string or one of {value: …}, {env: VAR}, {file: PATH}")


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_issuer(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("the issuer must be an absolute https URL, e.g. https://auth.example.com")
    if parts.query or parts.fragment:
        # RFC 8414 §2: the issuer has no query or fragment component.
        raise ValueError("the issuer must not have a query or fragment (RFC 8414 §2)")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(
            "the issuer must use https except on loopback (localhost, 127.0.0.1, [::1]); "
            "put mcp-oauthd behind TLS and use its https URL"
        )
    if value.endswith("/"):
        raise ValueError("the issuer must not end with '/'; write it without the trailing slash")
    return value


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginConfig(Model):
    """The base of a plugin's ``provider:`` or ``storage:`` section (see
    docs/extending.md). A plugin subclasses it with ``type: Literal["<its type>"]`` and its
    own fields; the section is validated against that subclass, found through the plugin's
    entry point, so it forbids unknown keys and is frozen like every built-in section."""

    # The default is a placeholder and never validates anything (a section is validated
    # against its plugin's own subclass); the configuration reference shows it as the tag.
    type: str = Field(
        "<plugin>",
        description="Any other type a plugin registers (`mcp-oauthd plugins` lists what is "
        "installed); the other keys are the plugin's own (see docs/extending.md).",
    )


# --------------------------------------------------------------------------- server
class ServerConfig(Model):
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    shutdown_timeout: Duration = Field(
        10, description="How long in-flight requests may run after SIGTERM."
    )
    backlog: int = Field(4096, ge=1, description="Listen backlog.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes sharing the port (SO_REUSEPORT); sqlite or redis storage.",
    )


# --------------------------------------------------------------------------- storage
class MemoryStorageConfig(Model):
    type: Literal["memory"] = "memory"


class SqliteStorageConfig(Model):
    type: Literal["sqlite"] = "sqlite"
    path: Path = Field(Path("mcp-oauthd.db"), description="SQLite database file.")
    busy_timeout: Duration = Field(5, description="How long a writer waits for a lock.")

    @field_validator("path")
    @classmethod
    def _writable_dir(cls, value: Path) -> Path:
        parent = value.expanduser().resolve().parent
        if not parent.is_dir():
            raise ValueError(f"directory {parent} does not exist; create it or choose another path")
        if not os.access(parent, os.W_OK):
            raise ValueError(f"directory {parent} is not writable; fix its permissions")
        return value


class RedisStorageConfig(Model):
    type: Literal["redis"] = "redis"
    url: Secret = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="redis:// or rediss:// URL."
    )
    key_prefix: str = Field("mcp-oauthd:", description="Prefix of every key.")


BuiltinStorageConfig = MemoryStorageConfig | SqliteStorageConfig | RedisStorageConfig
StorageConfig = Annotated[BuiltinStorageConfig, Field(discriminator="type")]


# --------------------------------------------------------------------------- providers
class LocalUser(Model):
    username: str = Field(min_length=1)
    password_hash: str = Field(
        description="argon2 hash from `mcp-oauthd hash-password`.", pattern=r"^\$argon2"
    )
    email: str | None = None
    email_verified: bool = True
    name: str | None = None
    groups: list[str] = Field(default_factory=list)


class LocalProviderConfig(Model):
    type: Literal["local"] = "local"
    users: list[LocalUser] = Field(default_factory=list, description="Users who may log in.")


class OidcProviderConfig(Model):
    type: Literal["oidc"] = "oidc"
    issuer: str = Field(description="The IdP's issuer; discovery is read from it.")
    client_id: str
    client_secret: Secret | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    extra_authorize_params: dict[str, str] = Field(default_factory=dict)
    groups_claim: str = "groups"
    clock_skew: Duration = 60
    timeout: Duration = 10
    allow_insecure_http: bool = Field(
        False, description="Test-only: allow an http:// IdP issuer on loopback."
    )


class GoogleProviderConfig(Model):
    type: Literal["google"] = "google"
    client_id: str
    client_secret: Secret
    hosted_domain: str | None = Field(None, description="Restrict logins to a Workspace domain.")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    issuer: str = Field("https://accounts.google.com", description="Overridable for tests.")
    allow_insecure_http: bool = False
    clock_skew: Duration = 60
    timeout: Duration = 10


class GithubProviderConfig(Model):
    type: Literal["github"] = "github"
    client_id: str
    client_secret: Secret
    scopes: list[str] = Field(default_factory=lambda: ["read:user", "user:email", "read:org"])
    base_url: str = Field("https://github.com", description="GitHub Enterprise: its base URL.")
    api_url: str = Field("https://api.github.com", description="GitHub API base URL.")
    timeout: Duration = 10
    allow_insecure_http: bool = Field(
        False, description="Test-only: allow http:// GitHub URLs on loopback."
    )


BuiltinProviderConfig = (
    LocalProviderConfig | OidcProviderConfig | GoogleProviderConfig | GithubProviderConfig
)
ProviderConfig = Annotated[BuiltinProviderConfig, Field(discriminator="type")]

_BUILTIN_SECTIONS: dict[str, TypeAdapter[Any]] = {
    "provider": TypeAdapter(ProviderConfig),
    "storage": TypeAdapter(StorageConfig),
}


def _pluggable_section(
    kind: Literal["provider", "storage"],
    value: Any,
    handler: ValidatorFunctionWrapHandler,
    info: ValidationInfo,
) -> Any:
    """Validate a ``provider:`` / ``storage:`` section: built-in types against their
    discriminated union (errors located as ``provider.<field>``), any other type against
    the config model of the plugin registering it (``mcp_oauthd.plugins``)."""
    if isinstance(value, BaseModel):  # an already-validated section (built in or plugin)
        return handler(value)
    builtin = _BUILTIN_SECTIONS[kind]
    tag = value.get("type") if isinstance(value, dict) else None
    if not isinstance(tag, str) or tag in _builtin_tags(kind):
        return builtin.validate_python(value, context=info.context)
    # Imported here: the plugin registry imports the built-in descriptors, which import us.
    from mcp_oauthd import plugins

    return plugins.validate_config(kind, value, context=info.context)


def _builtin_tags(kind: str) -> frozenset[str]:
    union = BuiltinProviderConfig if kind == "provider" else BuiltinStorageConfig
    return frozenset(m.model_fields["type"].default for m in union.__args__)


# --------------------------------------------------------------------------- resources
class ResourceConfig(Model):
    uri: str = Field(description="Canonical URI of the MCP server (the token audience).")
    name: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["mcp"], description="Supported scopes.")
    default_scopes: list[str] | None = Field(
        None, description="Scopes granted when a request names none (default: all)."
    )
    default: bool = Field(False, description="The resource used when a request names none.")
    introspection_client_id: str | None = Field(
        None,
        description="The MCP server's own client id for introspection and token exchange "
        "(HTTP Basic or client_secret_post).",
    )
    introspection_client_secret: Secret | None = Field(
        None, description="Its secret; required with introspection_client_id."
    )
    allow_upstream_token: bool = Field(
        False,
        description="May this MCP server obtain the user's upstream access token through "
        "RFC 8693 token exchange (needs introspection credentials)?",
    )
    path_scopes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Scopes `/auth/verify` requires per request path prefix (the longest "
        "matching prefix wins), e.g. `{/mcp/admin: [admin]}`; added to any `X-Auth-Scope` "
        "that nginx sends.",
    )

    @field_validator("uri")
    @classmethod
    def _absolute(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ValueError("a resource URI is an absolute http(s) URL without a fragment")
        return value

    @model_validator(mode="after")
    def _defaults_subset(self) -> ResourceConfig:
        if self.default_scopes is not None and not set(self.default_scopes) <= set(self.scopes):
            raise ValueError("default_scopes must be a subset of scopes")
        if (self.introspection_client_id is None) != (self.introspection_client_secret is None):
            raise ValueError("introspection_client_id and introspection_client_secret go together")
        if self.allow_upstream_token and self.introspection_client_id is None:
            raise ValueError(
                "allow_upstream_token needs introspection_client_id and "
                "introspection_client_secret: the MCP server authenticates with them"
            )
        for prefix, needed in self.path_scopes.items():
            if not prefix.startswith("/"):
                raise ValueError(f"path_scopes: {prefix!r} must be a path starting with '/'")
            unknown = sorted(set(needed) - set(self.scopes))
            if unknown:
                raise ValueError(
                    f"path_scopes: {prefix} requires {', '.join(unknown)}, "
                    "which is not among this resource's scopes"
                )
        return self

    @property
    def effective_default_scopes(self) -> list[str]:
        return list(self.default_scopes if self.default_scopes is not None else self.scopes)


# --------------------------------------------------------------------------- clients
class StaticClientConfig(Model):
    client_id: str = Field(min_length=1)
    client_name: str | None = None
    client_secret: Secret | None = Field(None, description="Omit for a public client.")
    redirect_uris: list[str] = Field(min_length=1)
    scopes: list[str] | None = Field(None, description="Restrict the client to these scopes.")
    resources: list[str] | None = Field(None, description="Restrict the client to these URIs.")


class RedirectPolicyConfig(Model):
    allow_custom_schemes: bool = Field(
        True, description="Allow private-use schemes such as cursor:// and vscode://."
    )
    allow_http: bool = Field(
        False, description="Development only: allow plain http redirect URIs off loopback."
    )


class RegistrationConfig(Model):
    """Dynamic client registration (RFC 7591) and its abuse controls.

    The default policy is ``open`` because the MCP clients people use (Claude Code, VS
    Code, Cursor, MCP Inspector, the SDKs) register themselves with no credential and
    cannot obtain an initial access token; ``token`` or ``closed`` would lock them out.
    An open endpoint stays safe because registering grants nothing: every login still
    needs the user's consent for that client, and the per-IP caps, the registration
    window and the expiry of unused clients bound what a flood can store.
    """

    policy: Literal["open", "token", "closed"] = Field(
        "open",
        description="`open`: anyone may register (what MCP clients expect); `token`: a "
        "registration needs `initial_access_token` as a Bearer token; `closed`: only "
        "static clients and metadata documents.",
    )
    initial_access_token: Secret | None = Field(
        None, description="The Bearer token `policy: token` requires (a secret source)."
    )
    allow_public_clients: bool = Field(
        True,
        description="Allow registering public clients (`token_endpoint_auth_method: none`), "
        "which most MCP clients are.",
    )
    max_clients_per_ip: int = Field(
        50,
        ge=0,
        description="Active registered clients one IP (IPv6: one /64) may hold; 0: no cap.",
    )
    window: Duration = Field(3600, gt=0, description="Length of the registration window.")
    max_per_window: int = Field(
        20,
        ge=0,
        description="Registrations one IP (IPv6: one /64) may make per window; deleting "
        "clients does not give them back. 0: no limit.",
    )
    unused_client_ttl: Duration = Field(
        7 * 86400, gt=0, description="A registered client never used is deleted after this."
    )
    idle_client_ttl: Duration | None = Field(
        90 * 86400,
        description="A registered client not used for this long is deleted (null: never).",
    )

    @model_validator(mode="after")
    def _token_present(self) -> RegistrationConfig:
        if self.policy == "token":
            token = self.initial_access_token
            if token is None:
                raise ValueError("policy token needs initial_access_token")
            if len(token.get_secret_value()) < 20:
                raise ValueError("initial_access_token must be at least 20 characters")
        return self


class CimdConfig(Model):
    """Client ID Metadata Documents: an https URL as ``client_id``, fetched by this server."""

    enabled: bool = Field(
        True,
        description="Accept `https://` client ids and fetch their metadata document "
        "(advertised as `client_id_metadata_document_supported`).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Fetch documents only from these hosts (`example.com`, or "
        "`*.example.com` for subdomains). Empty: any public host.",
    )
    max_bytes: int = Field(5120, ge=256, le=1_048_576, description="Largest document accepted.")
    connect_timeout: Duration = Field(3, gt=0, description="Timeout to connect to the host.")
    timeout: Duration = Field(5, gt=0, description="Timeout of the whole fetch.")
    min_cache_ttl: Duration = Field(
        60, ge=0, description="Documents are cached at least this long, whatever the headers."
    )
    max_cache_ttl: Duration = Field(
        86400, gt=0, description="Documents are cached at most this long, whatever the headers."
    )
    default_cache_ttl: Duration = Field(
        600, ge=0, description="Cache lifetime when the response has no cache headers."
    )
    error_cache_ttl: Duration = Field(
        30, ge=0, description="A failed fetch is remembered (and not retried) this long."
    )
    max_cache_entries: int = Field(1000, ge=1, description="Documents kept in memory at most.")
    max_concurrent_fetches: int = Field(16, ge=1, description="Fetches in flight at most.")
    ca_file: Path | None = Field(
        None, description="Extra CA certificates (PEM) trusted for fetching documents."
    )
    allow_loopback_for_tests: bool = Field(
        False,
        description="Test-only: allow fetching from loopback addresses. Refused unless the "
        "issuer itself is on loopback.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        pattern = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$")
        for host in value:
            if not pattern.match(host):
                raise ValueError(f"{host!r} is not a lower-case host name or *.domain")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> CimdConfig:
        if self.min_cache_ttl > self.max_cache_ttl:
            raise ValueError("min_cache_ttl must not exceed max_cache_ttl")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"ca_file {self.ca_file} does not exist")
        return self


# --------------------------------------------------------------------------- tokens
class JwtConfig(Model):
    alg: Literal["ES256", "EdDSA", "Ed25519"] = Field(
        "ES256",
        description="Signature algorithm of JWT access tokens: ES256 (P-256), EdDSA or "
        "Ed25519 (both Ed25519 keys; `Ed25519` is the RFC 9864 name, `EdDSA` the one most "
        "libraries know).",
    )
    rotation_interval: Duration = Field(
        30 * 86400,
        ge=60,
        description="A new signing key takes over this often. Each key is published in the "
        "JWKS one interval before it signs anything.",
    )
    key_overlap: Duration = Field(
        86400,
        ge=0,
        description="A retired key stays in the JWKS this long after the last token it "
        "signed has expired (covers resource servers' JWKS caches and clock skew).",
    )


class TokensConfig(Model):
    format: Literal["opaque", "jwt"] = Field(
        "opaque",
        description="Access-token format: opaque (random, stored hashed) or jwt (RFC 9068; "
        "still recorded, so revocation shows through introspection).",
    )
    access_token_ttl: Duration = Field(3600, gt=0)
    refresh_token_ttl: Duration = Field(
        30 * 86400, gt=0, description="Idle lifetime of a refresh token."
    )
    refresh_family_lifetime: Duration = Field(
        90 * 86400, gt=0, description="Absolute lifetime of a grant and its refresh family."
    )
    refresh_grace_period: Duration = Field(
        30, ge=0, description="A rotated refresh token replayed this soon gets its successor."
    )
    code_ttl: Duration = Field(60, gt=0, le=600)
    flow_ttl: Duration = Field(600, gt=0, le=600, description="Max time for a login flow.")
    token_refresh_threshold: Duration = Field(
        300, ge=0, description="Refresh upstream tokens this long before they expire."
    )
    jwt: JwtConfig = Field(
        default_factory=JwtConfig, description="JWT access tokens (with format: jwt)."
    )


# --------------------------------------------------------------------------- consent, policy
class ConsentConfig(Model):
    enabled: bool = True
    remember: bool = True
    remember_ttl: Duration = 30 * 86400


class AccessPolicyConfig(Model):
    allowed_emails: list[str] = Field(default_factory=list)
    allowed_domains: list[str] = Field(default_factory=list)
    allowed_groups: list[str] = Field(default_factory=list)
    allowed_github_orgs: list[str] = Field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return not (
            self.allowed_emails
            or self.allowed_domains
            or self.allowed_groups
            or self.allowed_github_orgs
        )


# --------------------------------------------------------------------------- security
def _check_key(value: SecretStr) -> SecretStr:
    import base64
    import binascii

    raw = value.get_secret_value()
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("an encryption key is 32 bytes, base64-encoded") from None
    if len(decoded) != 32:
        raise ValueError(
            "an encryption key is 32 bytes, base64-encoded; generate one with "
            "`python -c 'import secrets,base64;"
            "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'`"
        )
    return value


class EncryptionKeyConfig(Model):
    id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    key: Annotated[Secret, AfterValidator(_check_key)]


class SecurityConfig(Model):
    encryption_keys: list[EncryptionKeyConfig] = Field(
        default_factory=list,
        description="AES-256-GCM key ring; the first key encrypts, all decrypt. Empty: a key "
        "is generated and kept beside the database (with a warning).",
    )
    cookie_secret: Secret | None = Field(
        None, description="HMAC key for browser cookies (generated and kept if omitted)."
    )
    redirect: RedirectPolicyConfig = Field(default_factory=RedirectPolicyConfig)
    state_dir: Path | None = Field(
        None,
        description="Where generated keys are kept (default: beside the SQLite file, else ./).",
    )


class BudgetConfig(Model):
    per_minute: float = Field(gt=0, description="Sustained requests a minute.")
    burst: int = Field(ge=1, description="Requests allowed at once before the rate applies.")


class RateLimitsConfig(Model):
    """Token buckets per client IP (and per user where one is known). 429 + Retry-After."""

    enabled: bool = True
    max_keys: int = Field(
        100_000, ge=100, description="In-memory buckets kept at most (LRU); bounds memory."
    )
    authorize: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(per_minute=60, burst=30),
        description="Per IP: /oauth/authorize, consent and callback.",
    )
    login: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(per_minute=20, burst=10),
        description="Per IP: the local login form.",
    )
    login_user: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(per_minute=10, burst=5),
        description="Per username: local login attempts (slows password guessing).",
    )
    token: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(per_minute=300, burst=100),
        description="Per IP: /oauth/token and /oauth/revoke.",
    )
    registration: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(per_minute=20, burst=10),
        description="Per IP: /oauth/register.",
    )
    introspect: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(per_minute=600_000, burst=20_000),
        description="Per IP and per process: /oauth/introspect and /auth/verify (resource "
        "servers' hot path; kept in memory even with Redis, an abuse ceiling).",
    )
    default: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(per_minute=1200, burst=300),
        description="Per IP: every other endpoint (discovery, JWKS, pages).",
    )


class ProxyConfig(Model):
    """Which X-Forwarded-For hops to believe. By default none: the socket peer is the IP."""

    trusted_hops: int = Field(
        0, ge=0, le=10, description="Trust this many proxies in front (X-Forwarded-For)."
    )
    trusted_cidrs: list[str] = Field(
        default_factory=list,
        description="Trust X-Forwarded-For only from peers in these networks.",
    )

    @field_validator("trusted_cidrs")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP network such as 10.0.0.0/8") from None
        return value


_ORIGIN = re.compile(r"^https?://[^/?#\s]+$")


class CorsConfig(Model):
    """CORS for browser-based MCP clients (MCP Inspector, web apps): discovery, token,
    registration, revocation and JWKS only; never the login, consent or authorize pages,
    never introspection (server to server). Off until origins are listed."""

    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (`scheme://host[:port]`, no path) whose scripts may call "
        "the JSON endpoints, e.g. `http://localhost:6274` for MCP Inspector. `*`: any "
        "origin (needs `allow_wildcard: true`).",
    )
    allow_wildcard: bool = Field(
        False,
        description="Confirm `*` in `allowed_origins` (any web page may then read the "
        "responses of these endpoints; check-config warns).",
    )
    max_age: Duration = Field(
        600, ge=0, le=86400, description="How long browsers may cache a preflight answer."
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port] with no path "
                    "or trailing slash, e.g. http://localhost:6274"
                )
        return value

    @model_validator(mode="after")
    def _wildcard_confirmed(self) -> CorsConfig:
        if "*" in self.allowed_origins and not self.allow_wildcard:
            raise ValueError(
                "cors.allowed_origins: '*' lets any web page call the token endpoint; list "
                "the origins instead, or set cors.allow_wildcard: true to confirm"
            )
        return self


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    access_log: bool = Field(True, description="One line per HTTP request, with its latency.")
    access_log_hot_paths: bool = Field(
        False,
        description="Also log successful /oauth/introspect and /auth/verify requests (one per "
        "request to every protected MCP server; metrics count them either way). Failures "
        "are always logged.",
    )


# --------------------------------------------------------------------------- observability
class MetricsConfig(Model):
    enabled: bool = Field(True, description="Serve Prometheus metrics at `/metrics`.")
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve `/metrics` on this port instead of the main listener (keeps it "
        "off the public address). Omit: the main listener serves it. With several "
        "`server.workers`, worker N serves its own metrics on `port + N`.",
    )
    host: str = Field(
        "127.0.0.1", description="Address of the separate metrics listener (with `port`)."
    )
    expose_client_ids: bool = Field(
        False,
        description="Add a `client_id` label to flow counters (static client ids only; "
        "dynamic and metadata-document clients collapse to `_dynamic` / `_cimd`). "
        "User ids are never a label.",
    )
    gauge_refresh_interval: Duration = Field(
        60,
        gt=0,
        description="The grant and client gauges are recounted from storage at most this "
        "often (on scrape), never on every scrape.",
    )


class TracingConfig(Model):
    exporter: Literal["none", "otlp", "stdout"] = Field(
        "none",
        description="`none` (no tracing, no overhead), `otlp` (OTLP over HTTP to a "
        "collector) or `stdout` (spans printed as JSON, for debugging).",
    )
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="OTLP/HTTP traces endpoint of the collector (the full `/v1/traces` URL).",
    )
    otlp_headers: dict[str, Secret] = Field(
        default_factory=dict,
        description="Headers sent with every export (e.g. an API key), each a secret source.",
    )
    otlp_timeout: Duration = Field(10, gt=0, description="Timeout of one export call.")
    service_name: str = Field(
        "mcp-oauthd", min_length=1, description="The `service.name` resource attribute."
    )
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Fraction of new traces recorded (parent-based: an incoming sampled "
        "`traceparent` is honoured).",
    )


class ObservabilityConfig(Model):
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics.")
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="OpenTelemetry traces."
    )


# --------------------------------------------------------------------------- root
class Config(Model):
    issuer: Annotated[str, AfterValidator(_check_issuer)] = Field(
        description="This server's issuer URL, used byte-for-byte everywhere."
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: BuiltinStorageConfig | PluginConfig = Field(default_factory=SqliteStorageConfig)
    provider: BuiltinProviderConfig | PluginConfig = Field(default_factory=LocalProviderConfig)
    resources: list[ResourceConfig] = Field(min_length=1)
    clients: list[StaticClientConfig] = Field(default_factory=list)
    registration: RegistrationConfig = Field(
        default_factory=RegistrationConfig,
        description="Dynamic client registration (RFC 7591) and its abuse controls.",
    )
    cimd: CimdConfig = Field(
        default_factory=CimdConfig,
        description="Client ID Metadata Documents (an https URL as client_id).",
    )
    tokens: TokensConfig = Field(default_factory=TokensConfig)
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    access_policy: AccessPolicyConfig = Field(default_factory=AccessPolicyConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    cors: CorsConfig = Field(
        default_factory=CorsConfig,
        description="CORS for browser-based clients on the JSON endpoints (off by default).",
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    observability: ObservabilityConfig = Field(
        default_factory=ObservabilityConfig,
        description="Prometheus metrics and OpenTelemetry traces.",
    )

    @field_validator("provider", mode="wrap")
    @classmethod
    def _provider_type(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        return _pluggable_section("provider", value, handler, info)

    @field_validator("storage", mode="wrap")
    @classmethod
    def _storage_type(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        return _pluggable_section("storage", value, handler, info)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if isinstance(self.storage, RedisStorageConfig) and (
            not self.security.encryption_keys or self.security.cookie_secret is None
        ):
            # Replicas must share these, and keeping generated keys in the same Redis as the
            # data they protect would make the encryption pointless.
            raise ValueError(
                "security: redis storage needs security.encryption_keys and "
                "security.cookie_secret from config (every replica must use the same keys); "
                "generate them with `python -c 'import secrets,base64;"
                "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'`"
            )
        if self.server.workers > 1 and isinstance(self.storage, MemoryStorageConfig):
            raise ValueError(
                "server.workers > 1 needs shared storage: memory storage lives in one process; "
                "use storage.type sqlite or redis, or set workers to 1"
            )
        uris = [r.uri for r in self.resources]
        if len(set(uris)) != len(uris):
            raise ValueError("resources: each uri may appear once")
        if sum(r.default for r in self.resources) > 1:
            raise ValueError("resources: at most one resource may set default: true")
        ids = [c.client_id for c in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError("clients: each client_id may appear once")
        rs_ids = [r.introspection_client_id for r in self.resources if r.introspection_client_id]
        if len(set(rs_ids)) != len(rs_ids):
            raise ValueError("resources: each introspection_client_id may appear once")
        for client in self.clients:
            for uri in client.resources or []:
                if uri not in uris:
                    raise ValueError(
                        f"clients: client {client.client_id} names resource {uri}, "
                        "which is not configured under resources"
                    )
        metrics_port = self.observability.metrics.port
        if metrics_port and 0 <= self.server.port - metrics_port < self.server.workers:
            raise ValueError(
                "observability.metrics.port must differ from server.port (with several "
                "workers, port + N for each worker N); omit it to serve /metrics on the "
                "main listener"
            )
        if metrics_port and metrics_port + self.server.workers - 1 > 65535:
            raise ValueError("observability.metrics.port + server.workers - 1 exceeds 65535")
        if self.cimd.allow_loopback_for_tests and not is_loopback_host(
            urlsplit(self.issuer).hostname
        ):
            # A test-only switch: outside a loopback test setup it would open the SSRF guard.
            raise ValueError(
                "cimd.allow_loopback_for_tests is for tests only and needs a loopback issuer"
            )
        return self

    @property
    def default_resource(self) -> ResourceConfig:
        for resource in self.resources:
            if resource.default:
                return resource
        return self.resources[0]

    def resource(self, uri: str) -> ResourceConfig | None:
        for resource in self.resources:
            if resource.uri == uri:
                return resource
        return None
