"""Who may log in at all (DESIGN §4): allowed emails, domains, groups, GitHub orgs."""

from __future__ import annotations

from mcp_oauthd.config.models import AccessPolicyConfig
from mcp_oauthd.providers.base import Identity


def is_allowed(policy: AccessPolicyConfig, identity: Identity) -> bool:
    """An empty policy admits everyone; otherwise any matching rule admits."""
    if policy.is_open:
        return True
    email = (identity.email or "").lower() if identity.email_verified else ""
    if email and email in {e.lower() for e in policy.allowed_emails}:
        return True
    if email and "@" in email:
        domain = email.rsplit("@", 1)[1]
        if domain in {d.lower().lstrip("@") for d in policy.allowed_domains}:
            return True
    if set(identity.groups) & set(policy.allowed_groups):
        return True
    orgs = {o.lower() for o in identity.github_orgs}
    return bool(orgs & {o.lower() for o in policy.allowed_github_orgs})
