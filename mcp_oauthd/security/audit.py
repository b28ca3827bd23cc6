"""The audit log: one structured event per security-relevant fact.

``Auditor.emit("token.issued", client_id=..., subject=..., resource=...)`` writes one log
line on the ``mcp_oauthd.audit`` logger with ``audit=true`` and keeps the event in a
bounded in-memory ring (``auditor.events``) that tests read.

An audit event never holds a credential: a field whose name looks like one (token,
secret, password, code, verifier, assertion, cookie, authorization, ...) is dropped and
its name listed under ``dropped_fields``. With ``hash_user_ids=True`` the user-identifying
fields are replaced by a keyed hash (HMAC-SHA256), so events still correlate without
naming the person.

Listeners (``auditor.add_listener(fn)``) see every event after filtering, as
``fn(event, record)``; the metrics use this, so each audit event is also a counter
increment (``oauth_audit_events_total{event}`` and, for the names below, a named counter;
see ``AUDIT_COUNTERS`` in :mod:`mcp_oauthd.observability.metrics`). A failing listener is
logged and never breaks the audited operation.

Event names (and the fields the metrics read, if any): ``authorization.started``,
``consent.granted``, ``consent.denied``, ``login.succeeded``, ``login.failed`` (wrong
credentials), ``login.refused`` (access policy), ``login.upstream_error``,
``token.issued`` (``grant``: code | refresh_token | token_exchange), ``token.refreshed``,
``token.refresh_grace``, ``token.revoked`` (``kind``: access | refresh),
``grant.revoked`` (``reason``), ``code.reused``, ``refresh.reused``, ``pkce.failed``,
``registration`` (``public``, ``deduplicated``), ``registration.refused`` (``reason``),
``token.exchanged``, ``token_exchange.refused``, ``rate_limited`` (``limiter``, else
``endpoint``), ``cimd.fetched``, ``cimd.refused``, ``callback.browser_mismatch``,
``introspection.refused``, ``config.weakened``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from mcp_oauthd.observability.logging import is_credential_key, scrub_value, utc_timestamp

__all__ = ["AUDIT_LOGGER", "USER_FIELDS", "AuditListener", "Auditor"]

AuditListener = Callable[[str, Mapping[str, object]], None]

AUDIT_LOGGER = "mcp_oauthd.audit"
USER_FIELDS = frozenset({"subject", "user", "user_id", "username", "email", "sub"})

# Events that mean something was refused or attacked are logged at warning level.
_WARNING_EVENTS = frozenset({"code.reused", "refresh.reused", "rate_limited", "config.weakened"})
_WARNING_SUFFIXES = (".refused", ".reused", ".denied", ".failed", ".rejected")
# Field names that would clash with the keys of the event itself or of its log line.
_RESERVED_FIELDS = frozenset({"audit", "timestamp", "level", "logger"})


# Event names are the code's constants: the answer is remembered per name.
@functools.lru_cache(maxsize=256)
def _is_warning(event: str) -> bool:
    return event in _WARNING_EVENTS or event.endswith(_WARNING_SUFFIXES)


class Auditor:
    """Writes audit events and remembers the last ``max_events`` of them."""

    def __init__(
        self,
        *,
        max_events: int = 1000,
        hash_user_ids: bool = False,
        hash_key: bytes | None = None,
        logger: Any = None,
    ) -> None:
        self.events: deque[dict[str, object]] = deque(maxlen=max_events)
        self.hash_user_ids = hash_user_ids
        # Without a configured key, hashes correlate within one process lifetime only.
        self._hash_key = hash_key if hash_key is not None else secrets.token_bytes(32)
        self._log = logger if logger is not None else structlog.get_logger(AUDIT_LOGGER)
        self._listeners: list[AuditListener] = []

    def add_listener(self, listener: AuditListener) -> None:
        """Call ``listener(event, record)`` for every event from now on."""
        self._listeners.append(listener)

    def hash_user_id(self, value: object) -> str:
        digest = hmac.new(self._hash_key, str(value).encode("utf-8"), hashlib.sha256)
        return "h:" + digest.hexdigest()[:32]

    def emit(self, event: str, **fields: object) -> None:
        """Record one audit event. Credential-looking fields are dropped, never written."""
        record: dict[str, object] = {}
        dropped: list[str] | None = None
        hash_user_ids = self.hash_user_ids
        for key, value in fields.items():
            if key in _RESERVED_FIELDS:
                key = f"field_{key}"
            if is_credential_key(key):
                if dropped is None:
                    dropped = []
                dropped.append(key)
                continue
            if hash_user_ids and key in USER_FIELDS and value is not None:
                value = self.hash_user_id(value)
            record[key] = scrub_value(value)
        if dropped:
            record["dropped_fields"] = sorted(dropped)

        stored: dict[str, object] = {
            "event": event,
            "audit": True,
            # datetime.now(UTC).isoformat(), from the logging's per-second cache
            "timestamp": utc_timestamp()[:-1] + "+00:00",
            **record,
        }
        self.events.append(stored)

        # The line's own processors scrub these values again: a second pass over values
        # already scrubbed finds nothing and costs little (no regex on a string without
        # whitespace), and it keeps the guarantee for lines the audit did not write.
        method = self._log.warning if _is_warning(event) else self._log.info
        method(event, audit=True, **record)
        for listener in self._listeners:
            try:
                listener(event, record)
            except Exception:  # observability must never break the audited operation
                self._log.exception("audit listener failed", listener_event=event)

    def find(self, event: str) -> list[dict[str, object]]:
        """The remembered events named ``event`` (oldest first)."""
        return [e for e in self.events if e["event"] == event]

    def clear(self) -> None:
        self.events.clear()
