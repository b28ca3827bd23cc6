"""Load, interpolate and validate the YAML configuration.

``load_config(path)`` reads YAML (``None``: the embedded defaults), replaces ``${VAR}`` and
``${VAR:-default}`` in string values (``$${`` is a literal ``${``), validates against
:class:`~mcp_oauthd.config.models.Config` and returns the frozen model. Every problem found
is reported at once in a :class:`ConfigError` as ``(dotted path, message, hint)``.

No message ever contains an input value: a broken config may hold secrets.

``check_warnings(config)`` lists every weakened default, for startup logs and
``mcp-oauthd check-config``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from mcp_oauthd import plugins
from mcp_oauthd.config.models import (
    Config,
    GithubProviderConfig,
    GoogleProviderConfig,
    LocalProviderConfig,
    MemoryStorageConfig,
    OidcProviderConfig,
    PluginConfig,
    is_loopback_host,
)

__all__ = [
    "DEFAULTS_NAME",
    "ConfigError",
    "ConfigWarning",
    "Problem",
    "Warning",
    "check_warnings",
    "load_config",
    "load_defaults_text",
]

DEFAULTS_NAME = "<embedded defaults>"
DOCS_HINT = "see docs/configuration.md"


class Problem(NamedTuple):
    """One thing wrong with a config: where, what, and how to fix it."""

    path: str
    message: str
    hint: str

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.message} (fix: {self.hint})"
            if self.hint
            else (f"{self.path}: {self.message}")
        )


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[tuple[str, str, str]]) -> None:
        self.problems: list[Problem] = [Problem(*p) for p in problems]
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------- YAML
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one silently winning is a trap)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        # Only the parser's own words: str(exc) quotes the offending line, which may be a secret.
        what = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise ConfigError(
            [(where, f"YAML syntax error: {what}", "fix the indentation, quoting or ':' there")]
        ) from None
    except yaml.YAMLError:
        raise ConfigError([(source, "YAML syntax error", "fix the YAML syntax")]) from None


# --------------------------------------------------------------------------- interpolation
_TOKEN = re.compile(
    r"\$\$\{"  # escaped: a literal ${
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>:-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{)"
)


def _dotted(parts: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in parts) or "(root)"


def _interpolate(
    value: Any,
    environ: Mapping[str, str],
    path: tuple[str | int, ...],
    problems: list[Problem],
    missing_paths: set[str],
) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, environ, (*path, str(k)), problems, missing_paths)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, environ, (*path, i), problems, missing_paths)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "${" not in value:
        return value

    where = _dotted(path)

    def replace(match: re.Match[str]) -> str:
        if match.group("bad") is not None:
            problems.append(
                Problem(
                    where,
                    "malformed ${…} reference",
                    "write ${VAR} or ${VAR:-default}, or $${ for a literal ${",
                )
            )
            missing_paths.add(where)
            return ""
        name = match.group("name")
        if name is None:
            return "${"
        found = environ.get(name)
        if match.group("sep") is not None:
            # Shell semantics: ':-' also replaces an empty value.
            return found if found else match.group("default")
        if found is None:
            problems.append(
                Problem(
                    where,
                    f"environment variable {name} is not set",
                    f"export {name}, or write ${{{name}:-default}}",
                )
            )
            missing_paths.add(where)
            return ""
        return found

    return _TOKEN.sub(replace, value)


# --------------------------------------------------------------------------- validation errors
def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional around a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_models(tp: Any) -> list[type[BaseModel]]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if _is_model(a)]
    return []


def _tag_of(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("type")
    return field.default if field is not None else None


def _humanize_loc(loc: tuple[int | str, ...]) -> tuple[list[str | int], type[BaseModel] | None]:
    """Map a pydantic error location to config keys (dropping union tags).

    Returns the path parts and the model whose fields the last part names (if any).
    """
    parts: list[str | int] = []
    current: Any = Config
    owner: type[BaseModel] | None = None
    for item in loc:
        current = _unwrap(current)
        variants = _union_models(current)
        if variants:
            match = next((m for m in variants if _tag_of(m) == item), None)
            if match is None and PluginConfig in variants and isinstance(item, str):
                match = _plugin_model(parts, item)
            if match is not None:  # a discriminator tag, not a key
                current = match
                continue
            current = None
        current = _unwrap(current)
        owner = None
        if _is_model(current) and isinstance(item, str):
            owner = current
            field = current.model_fields.get(item)
            current = field.annotation if field is not None else None
        elif typing.get_origin(current) is list and isinstance(item, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            current = None
        parts.append(item)
    return parts, owner


def _plugin_model(parts: list[str | int], tag: str) -> type[BaseModel] | None:
    """The config model of plugin type ``tag`` at ``provider`` / ``storage`` (errors of a
    plugin section are located under its type, like a built-in variant's)."""
    if parts == ["provider"]:
        return getattr(plugins.providers.loaded(tag), "config_model", None)
    if parts == ["storage"]:
        return getattr(plugins.storage.loaded(tag), "config_model", None)
    return None


_HINTS: dict[str, str] = {
    "missing": "add it",
    "string_type": "write a string (quote it if YAML reads it as something else)",
    "int_type": "write a whole number",
    "int_parsing": "write a whole number",
    "int_from_float": "write a whole number",
    "float_type": "write a number",
    "float_parsing": "write a number",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "list_type": "write a YAML list (one '- item' per line, or [a, b])",
    "dict_type": "write a mapping (key: value lines)",
    "model_type": "write a mapping (key: value lines)",
    "model_attributes_type": "write a mapping (key: value lines)",
    "literal_error": "use one of the values listed",
    "enum": "use one of the values listed",
    "too_short": "add the missing entries",
    "too_long": "remove entries",
    "string_too_short": "write a non-empty value",
    "string_too_long": "shorten it",
    "greater_than": "raise it",
    "greater_than_equal": "raise it",
    "less_than": "lower it",
    "less_than_equal": "lower it",
    "path_type": "write a file path",
    "none_required": "remove it",
    "frozen_instance": "remove it",
}

_PATTERN_HINTS: dict[str, str] = {
    "password_hash": "generate one with `mcp-oauthd hash-password`",
    "id": "use only letters, digits, '_', '.' and '-'",
}


def _convert_error(error: Mapping[str, Any]) -> Problem:
    kind = str(error.get("type", ""))
    loc = tuple(error.get("loc", ()))
    parts, owner = _humanize_loc(loc)
    msg = str(error.get("msg", "invalid value"))
    ctx = error.get("ctx") or {}

    if kind == "extra_forbidden":
        key = str(parts[-1]) if parts else ""
        names = sorted(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean '{close[0]}'?"
        elif names:
            hint = "remove it; valid keys here: " + ", ".join(names)
        else:
            hint = "remove it"
        return Problem(_dotted(parts), "unknown key", hint)

    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(ctx.get("discriminator", "type")).strip("'")
        expected = str(ctx.get("expected_tags", ""))
        path = _dotted([*parts, discriminator])
        if kind == "union_tag_not_found":
            return Problem(path, "required key is missing", f"add it: one of {expected}")
        tag = str(ctx.get("tag", ""))
        options = [t.strip().strip("'") for t in expected.split(",")]
        close = difflib.get_close_matches(tag, options, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"use one of {expected}"
        return Problem(path, "unknown type", hint)

    if kind == "missing":
        return Problem(_dotted(parts), "required key is missing", "add it")

    if kind in ("plugin_unknown_type", "plugin_load_failed"):
        # Raised by mcp_oauthd.plugins: the message names the type (and the failed
        # plugin), the hint lists what is installed.
        return Problem(_dotted(parts), msg, str(ctx.get("hint") or DOCS_HINT))

    if kind in ("value_error", "assertion_error"):
        text = re.sub(r"^(Value|Assertion) error,\s*", "", msg)
        if not parts:
            # Root validators prefix their message with the section they are about.
            head, sep, rest = text.partition(": ")
            if sep and head in Config.model_fields:
                parts, text = [head], rest
        message, sep, fix = text.partition("; ")
        return Problem(_dotted(parts), message, fix if sep else DOCS_HINT)

    if kind == "string_pattern_mismatch":
        last = str(parts[-1]) if parts else ""
        return Problem(_dotted(parts), msg, _PATTERN_HINTS.get(last, "fix its format"))

    return Problem(_dotted(parts), msg, _HINTS.get(kind, DOCS_HINT))


def _problems_from_validation(exc: ValidationError) -> list[Problem]:
    # include_input=False: the input may be a secret; we never echo it.
    errors = exc.errors(include_url=False, include_input=False, include_context=True)
    problems: list[Problem] = []
    for error in errors:
        problem = _name_the_plugin(_convert_error(error), tuple(error.get("loc", ())))
        if problem not in problems:
            problems.append(problem)
    return problems


def _name_the_plugin(problem: Problem, loc: tuple[int | str, ...]) -> Problem:
    """A problem inside a plugin's section also says which plugin defines that section."""
    if len(loc) < 2 or loc[0] not in ("provider", "storage") or not isinstance(loc[1], str):
        return problem
    registry = plugins.providers if loc[0] == "provider" else plugins.storage
    info = registry.info(loc[1])
    if info is None or info.builtin:
        return problem
    origin = f"{info.distribution} {info.version}" if info.version else info.distribution
    joiner = " See" if problem.hint.endswith("?") else "; see"
    return problem._replace(hint=f"{problem.hint}{joiner} plugin {origin}")


# --------------------------------------------------------------------------- public API
def load_defaults_text() -> str:
    """The packaged default configuration (runs on a laptop, no external account)."""
    return (resources.files("mcp_oauthd.config") / "defaults.yaml").read_text(encoding="utf-8")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "check the path, or omit --config to run with the embedded defaults"
        raise ConfigError([(str(path), "config file not found", hint)]) from None
    except IsADirectoryError:
        raise ConfigError([(str(path), "is a directory", "point at a YAML file")]) from None
    except PermissionError:
        raise ConfigError(
            [(str(path), "config file cannot be read", "fix its permissions")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([(str(path), "config file is not UTF-8", "save it as UTF-8")]) from None
    except OSError as exc:
        raise ConfigError(
            [(str(path), f"config file cannot be read ({exc.strerror})", "check the path")]
        ) from None


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file (``None``: the embedded defaults).

    Raises :class:`ConfigError` listing every problem found.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None:
        text, source = load_defaults_text(), DEFAULTS_NAME
    else:
        text, source = _read(path), str(path)

    data = _parse_yaml(text, source)
    if data is None:
        raise ConfigError([(source, "the config is empty", "start from config.example.yaml")])
    if not isinstance(data, dict):
        raise ConfigError(
            [(source, "the config must be a mapping of keys", "start from config.example.yaml")]
        )

    problems: list[Problem] = []
    missing_paths: set[str] = set()
    data = _interpolate(data, env, (), problems, missing_paths)

    try:
        config = Config.model_validate(data, context={"environ": env})
    except ValidationError as exc:
        for problem in _problems_from_validation(exc):
            # A value we blanked because its variable is missing: already reported.
            if any(problem.path == m or problem.path.startswith(m + ".") for m in missing_paths):
                continue
            problems.append(problem)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


# --------------------------------------------------------------------------- warnings
@dataclass(frozen=True)
class ConfigWarning:
    """A setting that weakens a secure default: which, why it matters, what to do."""

    field: str
    risk: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.risk}; {self.fix}"


Warning = ConfigWarning  # the name the brief uses; ConfigWarning avoids shadowing

DEMO_PASSWORD = "demo"
_ONE_DAY = 86400.0


def _has_demo_password(password_hash: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return bool(PasswordHasher().verify(password_hash, DEMO_PASSWORD))
    except (Argon2Error, InvalidHashError, ValueError):
        return False


def check_warnings(config: Config) -> list[ConfigWarning]:
    """Every weakened default in ``config`` (empty: nothing to warn about)."""
    out: list[ConfigWarning] = []
    add = out.append

    if config.issuer.startswith("http://"):
        add(
            ConfigWarning(
                "issuer",
                "plain http issuer: for development on this machine only",
                "use an https issuer behind TLS before anyone else connects",
            )
        )
    host = config.server.host
    if config.issuer.startswith("http://") and not is_loopback_host(host):
        add(
            ConfigWarning(
                "server.host",
                f"listening on {host} without TLS while the issuer is plain http",
                "listen on 127.0.0.1 or put a TLS proxy in front and use an https issuer",
            )
        )
    if config.security.redirect.allow_http:
        add(
            ConfigWarning(
                "security.redirect.allow_http",
                "plain http redirect URIs off loopback are allowed; codes can be intercepted",
                "set it to false and register https redirect URIs",
            )
        )
    if not config.consent.enabled:
        add(
            ConfigWarning(
                "consent.enabled",
                "consent is disabled; any client can obtain tokens for a logged-in user "
                "(confused deputy)",
                "set consent.enabled: true",
            )
        )
    provider = config.provider
    if config.access_policy.is_open and not isinstance(provider, LocalProviderConfig):
        add(
            ConfigWarning(
                "access_policy",
                f"the access policy is open: any account the {provider.type} provider accepts "
                "can log in",
                "set allowed_emails, allowed_domains, allowed_groups or allowed_github_orgs",
            )
        )
    if isinstance(provider, OidcProviderConfig | GoogleProviderConfig) and (
        provider.allow_insecure_http
    ):
        add(
            ConfigWarning(
                "provider.allow_insecure_http",
                "the upstream IdP may be reached over plain http (test-only setting)",
                "set it to false and use the IdP's https issuer",
            )
        )
    if isinstance(provider, GithubProviderConfig) and provider.base_url.startswith("http://"):
        add(
            ConfigWarning(
                "provider.base_url",
                "GitHub is reached over plain http",
                "use the https URL of your GitHub instance",
            )
        )
    if not config.security.encryption_keys:
        add(
            ConfigWarning(
                "security.encryption_keys",
                "no encryption key configured; a generated key will be kept beside the "
                "database, and losing it loses every stored upstream token",
                "configure security.encryption_keys with a key from a secret store",
            )
        )
    if config.security.cookie_secret is None:
        add(
            ConfigWarning(
                "security.cookie_secret",
                "no cookie secret configured; a generated one is kept in the state directory "
                "(replicas that do not share it reject each other's cookies)",
                "set security.cookie_secret from a secret store",
            )
        )
    if config.tokens.access_token_ttl > _ONE_DAY:
        add(
            ConfigWarning(
                "tokens.access_token_ttl",
                "access tokens live longer than a day; a leaked token stays usable that long",
                "keep it at an hour or less and rely on refresh tokens",
            )
        )
    if config.tokens.refresh_family_lifetime > 180 * _ONE_DAY:
        add(
            ConfigWarning(
                "tokens.refresh_family_lifetime",
                "grants live longer than 180 days without a new login",
                "lower it to 90 days or less",
            )
        )
    if isinstance(config.storage, MemoryStorageConfig):
        add(
            ConfigWarning(
                "storage.type",
                "memory storage: every token, grant and registration is lost on restart",
                "use sqlite (one host) or redis (several replicas)",
            )
        )
    if isinstance(provider, LocalProviderConfig):
        for index, user in enumerate(provider.users):
            if _has_demo_password(user.password_hash):
                add(
                    ConfigWarning(
                        f"provider.users.{index}.password_hash",
                        f"user {user.username} has the demo password",
                        "remove the user or set a hash from `mcp-oauthd hash-password`",
                    )
                )
    out.extend(_observability_warnings(config))
    out.extend(_client_warnings(config))
    out.extend(_cors_warnings(config))
    return out


def _cors_warnings(config: Config) -> list[ConfigWarning]:
    """A CORS wildcard: any web page may call the token and registration endpoints."""
    if "*" not in config.cors.allowed_origins:
        return []
    return [
        ConfigWarning(
            "cors.allowed_origins",
            "CORS allows any origin: every web page can call the token, registration and "
            "revocation endpoints from its visitors' browsers",
            "list the origins of your browser-based clients instead of '*'",
        )
    ]


def _client_warnings(config: Config) -> list[ConfigWarning]:
    """Weakened client registration and metadata-document settings."""
    out: list[ConfigWarning] = []
    if config.cimd.enabled and config.cimd.allow_loopback_for_tests:
        out.append(
            ConfigWarning(
                "cimd.allow_loopback_for_tests",
                "test-only setting: client metadata documents may be fetched from loopback "
                "addresses, which weakens the SSRF guard",
                "remove it outside tests",
            )
        )
    registration = config.registration
    if (
        registration.policy == "open"
        and registration.max_clients_per_ip == 0
        and registration.max_per_window == 0
    ):
        out.append(
            ConfigWarning(
                "registration",
                "open registration without a per-IP cap or registration window: one address "
                "can register clients without bound",
                "set registration.max_clients_per_ip and registration.max_per_window",
            )
        )
    return out


_PROBE_TIMEOUT = 0.25


def _loopback_port_closed(host: str, port: int) -> bool:
    """Whether nothing accepts connections on a loopback ``host:port``."""
    import socket

    try:
        with socket.create_connection((host.strip("[]"), port), timeout=_PROBE_TIMEOUT):
            return False
    except OSError:
        return True


def _observability_warnings(config: Config) -> list[ConfigWarning]:
    """Exporter and metrics settings that lose data or expose it. A bad exporter endpoint
    is a warning, never an error: the daemon must serve logins without its collector.
    Only a loopback endpoint is probed (one TCP connect); nothing else is contacted."""
    out: list[ConfigWarning] = []
    obs = config.observability
    if (
        obs.metrics.enabled
        and obs.metrics.port is None
        and not is_loopback_host(config.server.host)
    ):
        out.append(
            ConfigWarning(
                "observability.metrics.port",
                f"/metrics is served on the main listener ({config.server.host}), so anyone "
                "who reaches the server can read the metrics",
                "set observability.metrics.port to serve it on an internal listener, or "
                "block /metrics at the proxy",
            )
        )
    tracing = obs.tracing
    if tracing.exporter != "otlp":
        return out
    field = "observability.tracing.otlp_endpoint"
    parts = urlsplit(tracing.otlp_endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port < 0:
        out.append(
            ConfigWarning(
                field,
                "the OTLP endpoint is not an http(s) URL; no span will be exported",
                "use the collector's OTLP/HTTP URL, e.g. http://otel-collector:4318/v1/traces",
            )
        )
        return out
    if not parts.path.rstrip("/").endswith("/v1/traces"):
        out.append(
            ConfigWarning(
                field,
                "the OTLP endpoint has no /v1/traces path; collectors answer 404 to exports "
                "sent to their root",
                "give the full traces URL, e.g. http://otel-collector:4318/v1/traces",
            )
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        out.append(
            ConfigWarning(
                field,
                "spans (and otlp_headers, often an API key) travel unencrypted to "
                f"{parts.hostname}",
                "use an https endpoint or a collector on the same host or pod",
            )
        )
    if is_loopback_host(parts.hostname) and _loopback_port_closed(parts.hostname, port):
        out.append(
            ConfigWarning(
                field,
                f"nothing listens on {parts.hostname}:{port}; spans will be dropped until "
                "the collector is up",
                "start the OpenTelemetry collector or fix the endpoint",
            )
        )
    return out
