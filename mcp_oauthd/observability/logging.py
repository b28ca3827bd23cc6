"""Structured logging: structlog JSON lines (console renderer on a TTY).

One handler on the root logger renders both structlog events and stdlib records
(aiohttp's loggers) through :class:`structlog.stdlib.ProcessorFormatter`, so every line
has the same shape: ISO timestamp, level, logger, event, and whatever is bound in
:mod:`structlog.contextvars` (the HTTP middleware binds ``request_id``; with tracing on,
the tracing middleware binds ``trace_id`` and ``span_id`` of the request span, and
:func:`add_trace_context` puts the *current* span's ids on lines logged inside a child
span, so a line joins the exact storage or upstream call it came from).

Defence in depth: :func:`redact_credentials` replaces the value of any key that looks like a
credential (token, secret, password, code, authorization, cookie, verifier, assertion) and
the credential part of ``Bearer``/``Basic`` strings, wherever they appear.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from mcp_oauthd.config.models import LoggingConfig

__all__ = [
    "REDACTED",
    "add_trace_context",
    "configure_logging",
    "is_credential_key",
    "redact_credentials",
    "scrub_value",
]

REDACTED = "[REDACTED]"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# A key is a credential when one of its words is one of these...
_CREDENTIAL_WORDS = frozenset(
    {
        "token",
        "tokens",
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "code",
        "authorization",
        "cookie",
        "cookies",
        "verifier",
        "assertion",
        "credential",
        "credentials",
        "apikey",
        "otp",
    }
)
# ... or it is one of these compounds ...
_CREDENTIAL_KEYS = frozenset(
    {"api_key", "private_key", "encryption_key", "signing_key", "session_key", "x_api_key"}
)
# ... unless its last word says it is metadata about one (token_type, code_challenge_method).
_METADATA_SUFFIXES = frozenset(
    {
        "type",
        "types",
        "method",
        "methods",
        "hint",
        "id",
        "ids",
        "count",
        "ttl",
        "lifetime",
        "length",
        "expires",
        "expiry",
        "exp",
        "status",
        "reason",
        "prefix",
        "kind",
        "endpoint",
        "supported",
        "source",
        "present",
    }
)
_SAFE_KEYS = frozenset(
    {"status_code", "error_code", "exit_code", "response_code", "http_code", "return_code"}
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|DPoP)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def is_credential_key(key: object) -> bool:
    """Whether a field named ``key`` probably carries a credential."""
    if not isinstance(key, str):
        return False
    return _is_credential_name(key)


# Every log line and audit event checks each of its keys, and the keys are a small fixed
# set (field names in the code), so the answer is remembered: two regexes per key per
# line were a measurable share of a request (bench/README.md).
@functools.lru_cache(maxsize=4096)
def _is_credential_name(key: str) -> bool:
    normal = _CAMEL.sub("_", key).lower()
    words = [w for w in _SPLIT.split(normal) if w]
    if not words:
        return False
    joined = "_".join(words)
    if joined in _SAFE_KEYS:
        return False
    if joined in _CREDENTIAL_KEYS:
        return True
    if words[-1] in _METADATA_SUFFIXES:
        return False
    return any(w in _CREDENTIAL_WORDS for w in words)


def scrub_value(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        return value
    if isinstance(value, str):
        return _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if is_credential_key(k) else scrub_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_value(v, depth + 1) for v in value]
    return value


def redact_credentials(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: blank every credential-looking key, at any nesting depth."""
    for key in list(event_dict):
        if key.startswith("_"):  # structlog/ProcessorFormatter internals
            continue
        if is_credential_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = scrub_value(event_dict[key])
    return event_dict


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the current OpenTelemetry span's trace and span id, if any."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


def _drop_color_message(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def _use_console(config: LoggingConfig, stream: IO[str]) -> bool:
    if config.format == "console":
        return True
    if config.format == "json":
        return False
    return _is_tty(stream)


def configure_logging(config: LoggingConfig, *, stream: IO[str] | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (default: stderr), one format.

    Safe to call more than once (tests do): the previous handler is replaced.
    """
    out: IO[str] = stream if stream is not None else sys.stderr
    level = _LEVELS[config.level]
    console = _use_console(config, out)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
    ]
    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    else:
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    final += [redact_credentials, renderer]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    handler = _OurHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # No line shows the caller's file, line or function, so records need not walk the
    # stack to find them on every call (the logging HOWTO's "Optimization" advice): with
    # the middleware chain that walk was a measurable share of a request (bench/README.md).
    logging._srcfile = None
    # aiohttp's loggers propagate to root; make sure none was left more verbose than asked.
    for name in ("aiohttp", "aiohttp.access", "aiohttp.server", "aiohttp.web"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
