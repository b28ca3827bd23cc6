"""Config reload (SIGHUP): clients, resources, access policy, consent and logging change
in place; everything else needs a restart, and a reload that changes it is refused with
the old config kept (so a typo never takes a running daemon down)."""

from __future__ import annotations

from dataclasses import dataclass

from mcp_oauthd.config.models import Config
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.oauth.redirects import validate as validate_redirect
from mcp_oauthd.service.context import Services

RELOADABLE = frozenset({"clients", "resources", "access_policy", "consent", "logging"})


@dataclass(frozen=True)
class ReloadResult:
    applied: bool
    changed: list[str]  # reloadable sections that changed
    restart_needed: list[str]  # sections that differ but only a restart may change


def diff(old: Config, new: Config) -> tuple[list[str], list[str]]:
    changed: list[str] = []
    restart: list[str] = []
    for name in type(old).model_fields:
        if getattr(old, name) == getattr(new, name):
            continue
        (changed if name in RELOADABLE else restart).append(name)
    return changed, restart


def validate_clients(config: Config) -> None:
    """The same redirect URI rules the daemon applies at start-up (raises on a bad URI)."""
    policy = RedirectPolicy(
        allow_custom_schemes=config.security.redirect.allow_custom_schemes,
        allow_http=config.security.redirect.allow_http,
    )
    for client in config.clients:
        for uri in client.redirect_uris:
            validate_redirect(uri, policy)


def apply(services: Services, new: Config) -> ReloadResult:
    changed, restart = diff(services.config, new)
    if restart:
        services.auditor.emit("config.reload_refused", restart_needed=",".join(restart))
        return ReloadResult(False, changed, restart)
    validate_clients(new)
    services.reload(new)
    services.auditor.emit("config.reloaded", changed=",".join(changed) or "nothing")
    return ReloadResult(True, changed, [])
