"""Generate ``docs/configuration.md`` from the configuration models.

    python -m mcp_oauthd.config.reference > docs/configuration.md

The reference walks the pydantic models themselves (field types, defaults,
descriptions), so it cannot drift: ``tests/config/test_reference.py`` fails when the
committed file differs from what this renders.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mcp_oauthd.config.models import Config, parse_duration

__all__ = ["iter_field_names", "render_reference"]

# Descriptions for fields whose model does not carry one (keyed "Model.field").
_FALLBACK: dict[str, str] = {
    "type": "Selects this variant.",
    "Config.server": "The HTTP listener.",
    "Config.storage": "Where state lives: `sqlite` (default), `memory` or `redis`.",
    "Config.provider": "Who logs users in: `local` (default), `oidc`, `google` or `github`.",
    "Config.resources": "The MCP servers tokens are issued for (at least one).",
    "Config.clients": "Static clients; others register dynamically or use metadata documents.",
    "Config.tokens": "Token formats and lifetimes.",
    "Config.consent": "The consent page.",
    "Config.access_policy": "Who may log in at all (empty: everyone the provider accepts).",
    "Config.security": "Encryption keys, cookies, redirect URI policy.",
    "Config.logging": "Log level and format.",
    "SecurityConfig.redirect": "Redirect URI policy.",
    "LocalUser.username": "Login name typed on the login page.",
    "LocalUser.email": "E-mail address reported to MCP servers and checked by the access policy.",
    "LocalUser.email_verified": "Whether the e-mail address counts as verified.",
    "LocalUser.name": "Display name.",
    "LocalUser.groups": "Groups, for `access_policy.allowed_groups`.",
    "OidcProviderConfig.client_id": "Client id registered at the IdP.",
    "OidcProviderConfig.client_secret": "Client secret registered at the IdP (a secret source).",
    "OidcProviderConfig.scopes": "Scopes requested upstream.",
    "OidcProviderConfig.extra_authorize_params": "Extra query parameters for the IdP's "
    "authorization request (e.g. `prompt: consent`).",
    "OidcProviderConfig.groups_claim": "ID-token claim that lists the user's groups.",
    "OidcProviderConfig.clock_skew": "Tolerated clock difference when checking ID tokens.",
    "OidcProviderConfig.timeout": "Timeout of each call to the IdP.",
    "GoogleProviderConfig.client_id": "OAuth client id from the Google Cloud console.",
    "GoogleProviderConfig.client_secret": "OAuth client secret (a secret source).",
    "GoogleProviderConfig.scopes": "Scopes requested from Google.",
    "GoogleProviderConfig.allow_insecure_http": "Test-only: allow an http:// issuer on loopback.",
    "GoogleProviderConfig.clock_skew": "Tolerated clock difference when checking ID tokens.",
    "GoogleProviderConfig.timeout": "Timeout of each call to Google.",
    "GithubProviderConfig.client_id": "Client id of the GitHub OAuth app.",
    "GithubProviderConfig.client_secret": "Client secret of the GitHub OAuth app.",
    "GithubProviderConfig.scopes": "Scopes requested from GitHub.",
    "GithubProviderConfig.timeout": "Timeout of each call to GitHub.",
    "ResourceConfig.name": "Human-readable name shown on the consent page.",
    "ResourceConfig.introspection_client_id": "Client id this MCP server uses to call "
    "introspection and token exchange.",
    "ResourceConfig.introspection_client_secret": "Its secret (a secret source).",
    "ResourceConfig.allow_upstream_token": "Allow this MCP server to obtain the user's upstream "
    "token by token exchange (RFC 8693).",
    "StaticClientConfig.client_id": "The client's id.",
    "StaticClientConfig.client_name": "Name shown on the consent page.",
    "StaticClientConfig.redirect_uris": "Allowed redirect URIs (loopback ones match any port).",
    "TokensConfig.format": "`opaque` (random, stored hashed) or `jwt` (RFC 9068).",
    "TokensConfig.access_token_ttl": "Lifetime of an access token.",
    "TokensConfig.code_ttl": "Lifetime of an authorization code (at most 10 minutes).",
    "ConsentConfig.enabled": "Ask the user to approve each client (keep on: confused deputy).",
    "ConsentConfig.remember": "Remember an approval per user, client, scopes and resource.",
    "ConsentConfig.remember_ttl": "How long a remembered approval lasts.",
    "AccessPolicyConfig.allowed_emails": "E-mail addresses that may log in.",
    "AccessPolicyConfig.allowed_domains": "E-mail domains that may log in.",
    "AccessPolicyConfig.allowed_groups": "Groups whose members may log in.",
    "AccessPolicyConfig.allowed_github_orgs": "GitHub organisations whose members may log in.",
    "EncryptionKeyConfig.id": "Key id, stored with each ciphertext.",
    "EncryptionKeyConfig.key": "32 random bytes, base64url-encoded (a secret source).",
    "LoggingConfig.level": "Minimum level logged.",
    "LoggingConfig.format": "`json`, `console`, or `auto` (console on a TTY, else JSON).",
    "LoggingConfig.access_log": "Log one line per HTTP request.",
}

_HEADER = """\
# Configuration reference

<!-- Generated by `python -m mcp_oauthd.config.reference > docs/configuration.md`.
     Do not edit by hand: tests/config/test_reference.py checks it is current. -->

mcp-oauthd reads one YAML file (`mcp-oauthd serve --config PATH`, or
`$MCP_OAUTHD_CONFIG`); without one it runs the embedded defaults (a demo setup for a
laptop). `mcp-oauthd check-config --config PATH` validates a file and lists weakened
settings. [`config.example.yaml`](../config.example.yaml) shows every key with comments.

- **Unknown keys are errors**, so a misspelt key never goes unnoticed.
- **Environment variables**: `${VAR}` and `${VAR:-default}` are replaced in any string
  value before validation; `$${` is a literal `${`. A missing variable without a default
  is an error.
- **Durations** are seconds (`3600`) or a number with a unit: `ms`, `s`, `m`, `h`, `d`, `w`
  (`"60m"`, `"30d"`).
- **Secrets** are a plain string or exactly one source: `{value: …}`, `{env: VAR}` or
  `{file: PATH}` (the file's content, trimmed). Their values never appear in logs or
  error messages.
- A key shown as **required** has no default.
"""


def _unwrap_annotated(tp: Any) -> tuple[Any, list[Any]]:
    meta: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp, meta = args[0], [*meta, *args[1:]]
    return tp, meta


def _is_duration(meta: list[Any]) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in meta)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp: Any, meta: list[Any]) -> str:
    tp, more = _unwrap_annotated(tp)
    meta = [*meta, *more]
    if _is_duration(meta):
        return "duration"
    if _is_union(tp):
        args = typing.get_args(tp)
        if all(_is_model(a) for a in args):
            return "section, by `type`"
        names = [_type_name(a, []) for a in args if a is not type(None)]
        name = " or ".join(names)
        return f"{name}, optional" if type(None) in args else name
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0], [])}"
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"map of {_type_name(key, [])} to {_type_name(value, [])}"
    if _is_model(tp):
        return "section"
    if _is_union(tp) and all(_is_model(a) for a in typing.get_args(tp)):
        return "section"
    simple = {
        SecretStr: "secret",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
    }
    return simple.get(tp, getattr(tp, "__name__", str(tp)))


def _human_seconds(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items()) + "}"
    return str(value)


def _default(field: FieldInfo, duration: bool) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            tag = getattr(value, "type", None)
            return f"`type: {tag}`" if isinstance(tag, str) else "see below"
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if duration and isinstance(value, int | float) and not isinstance(value, bool):
        return f"`{_scalar(value)}` ({_human_seconds(float(value))})"
    return f"`{_scalar(value)}`"


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    text = field.description or _FALLBACK.get(f"{model.__name__}.{name}")
    if text is None and name == "type":
        text = _FALLBACK["type"]
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _nested(tp: Any) -> tuple[str, list[type[BaseModel]]] | None:
    """If a field holds sections: ('', [model]) / ('[]', [model]) / ('', [variants])."""
    tp, _ = _unwrap_annotated(tp)
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        models = [a for a in args if _is_model(a)]
        if models and len(models) == len(args):
            return "", models
        if len(args) == 1:
            return _nested(args[0])
        return None
    if _is_model(tp):
        return "", [tp]
    if typing.get_origin(tp) is list:
        inner, _ = _unwrap_annotated(typing.get_args(tp)[0])
        if _is_model(inner):
            return "[]", [inner]
    return None


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    return str(field.default) if field is not None and field.default is not None else None


def _sections(
    model: type[BaseModel], path: str = "", tag: str | None = None
) -> Iterator[tuple[str, type[BaseModel]]]:
    """(heading, model) for every section, depth first; variants as ``path (type: x)``."""
    yield (f"{path} (type: {tag})" if tag else path), model
    for name, field in model.model_fields.items():
        nested = _nested(field.annotation)
        if nested is None:
            continue
        suffix, models = nested
        sub_path = f"{path}.{name}{suffix}" if path else f"{name}{suffix}"
        for sub in models:
            sub_tag = _tag(sub) if len(models) > 1 else tag
            yield from _sections(sub, sub_path, sub_tag)


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        _, meta = _unwrap_annotated(field.annotation)
        duration = _is_duration([*meta, *field.metadata])
        type_name = _type_name(field.annotation, list(field.metadata))
        default = _default(field, duration)
        text = _description(model, name, field)
        rows.append(f"| `{name}` | {type_name} | {default} | {text} |")
    return rows


def render_reference() -> str:
    """The Markdown reference of every configuration key."""
    lines = [_HEADER]
    for title, model in _sections(Config):
        lines.append(f"## `{title}`" if title else "## Top level")
        lines.append("")
        if not model.model_fields:
            lines.append("(no keys)")
        else:
            lines.extend(_table(model))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def iter_field_names(model: type[BaseModel] = Config) -> Iterator[tuple[str, str]]:
    """Every (section path, key) of the model, variants included."""
    for title, section in _sections(model):
        for name in section.model_fields:
            yield title, name


def main() -> int:
    sys.stdout.write(render_reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
