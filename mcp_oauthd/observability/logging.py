"""Structured logging: structlog JSON lines (console renderer on a TTY).

Every line has the same shape: ISO timestamp, level, logger, event, and whatever is bound
in :mod:`structlog.contextvars` (the HTTP middleware binds ``request_id``; with tracing
on, the tracing middleware binds ``trace_id`` and ``span_id`` of the request span, and
:func:`add_trace_context` puts the *current* span's ids on lines logged inside a child
span, so a line joins the exact storage or upstream call it came from).

Two routes lead to that one format and one stream. Our own structlog loggers render
their line in a single processor and write it straight to the stream (structlog's
"Performance" advice): the round trip through a stdlib ``Logger``, ``LogRecord``,
``Handler`` and :class:`structlog.stdlib.ProcessorFormatter` was most of the cost of an
audit event on the token endpoint (bench/README.md). Stdlib records of other libraries
(aiohttp's loggers) still go through one handler on the root logger with a
``ProcessorFormatter``. Both routes write through that handler under its lock, so lines
never interleave.

Defence in depth: :func:`redact_credentials` replaces the value of any key that looks like a
credential (token, secret, password, code, authorization, cookie, verifier, assertion) and
the credential part of ``Bearer``/``Basic``/``DPoP`` strings, wherever they appear.
"""

from __future__ import annotations

import functools
import io
import json
import json.encoder
import logging
import re
import sys
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import orjson
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from structlog.contextvars import merge_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from mcp_oauthd.config.models import LoggingConfig

__all__ = [
    "REDACTED",
    "add_trace_context",
    "configure_logging",
    "is_credential_key",
    "redact_credentials",
    "scrub_value",
    "utc_timestamp",
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


# Every log line and audit event checks each of its keys, and the keys are a small fixed
# set (field names in the code), so the answer is remembered: two regexes per key per
# line were a measurable share of a request (bench/README.md). The cache is the function
# itself, with no wrapper call in front of it.
@functools.lru_cache(maxsize=4096)
def is_credential_key(key: Hashable) -> bool:
    """Whether a field named ``key`` probably carries a credential."""
    if not isinstance(key, str):
        return False
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


def _redacted_scheme(match: re.Match[str]) -> str:
    return f"{match.group(1)} {REDACTED}"


# Values with nothing inside to scrub, recognised by their exact type before the slower
# isinstance checks (an ABC check for Mapping) that other values need.
_PLAIN_TYPES = frozenset({int, float, bool, type(None)})


def scrub_value(value: Any, depth: int = 0) -> Any:
    """``value`` with the credential part of Bearer/Basic/DPoP strings and the values of
    credential-looking keys replaced, in mappings and sequences nested up to 4 deep."""
    if depth > 4:
        return value
    cls = type(value)
    if cls is str:
        # `_AUTH_SCHEME` needs whitespace between the scheme word and the credential. Most
        # values (ids, URLs, scopes, hashes) have none, and two C-speed scans prove it
        # without running the regex: `\s` matches exactly the characters for which
        # str.isspace() is true, and every one of those except " " is not printable.
        if " " not in value and value.isprintable():
            return value
        return _AUTH_SCHEME.sub(_redacted_scheme, value)
    if cls in _PLAIN_TYPES:
        return value
    if cls is dict:
        return _scrub_mapping(value, depth)
    if cls is list or cls is tuple:
        return [scrub_value(v, depth + 1) for v in value]
    # Subclasses (a StrEnum, an OrderedDict, a named tuple) and other mappings.
    if isinstance(value, str):
        return _AUTH_SCHEME.sub(_redacted_scheme, value)  # comes out a plain str
    if isinstance(value, Mapping):
        return _scrub_mapping(value, depth)
    if isinstance(value, list | tuple):
        return [scrub_value(v, depth + 1) for v in value]
    return value


def _scrub_mapping(value: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
    return {
        k: REDACTED if is_credential_key(k) else scrub_value(v, depth + 1) for k, v in value.items()
    }


# Keys seen on earlier lines and found not to be credentials: one set lookup per key per
# line instead of a call. Keys are field names in the code, so the set stays small; the
# bound only guards against a caller that makes keys up.
_ORDINARY_KEYS: set[str] = set()
_ORDINARY_KEYS_MAX = 4096


def redact_credentials(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: blank every credential-looking key, at any nesting depth."""
    ordinary = _ORDINARY_KEYS
    for key, value in event_dict.items():
        # Replacing the value of a key already there never resizes the dict, so this is
        # safe while iterating, and it spares a copy of the keys per line.
        if key not in ordinary:
            if is_credential_key(key):
                event_dict[key] = REDACTED
                continue
            if type(key) is str and len(ordinary) < _ORDINARY_KEYS_MAX:
                ordinary.add(key)
        cls = type(value)
        if cls is str:  # the usual case, checked here without a call to scrub_value
            if " " in value or not value.isprintable():
                event_dict[key] = _AUTH_SCHEME.sub(_redacted_scheme, value)
        elif cls not in _PLAIN_TYPES:
            event_dict[key] = scrub_value(value)
    return event_dict


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the current OpenTelemetry span's trace and span id, if any."""
    if not otel_context.get_current():
        # An empty OpenTelemetry context holds no span (tracing off, or a line outside any
        # span: the usual case), and this one check spares the span lookup on every line.
        return event_dict
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


# (whole second, its "YYYY-MM-DDTHH:MM:SS" text): one strftime per second, not per line.
_second: tuple[int, str] = (-1, "")


def utc_timestamp() -> str:
    """Now in UTC as ISO 8601 with a ``Z``: the text of
    ``datetime.now(UTC).isoformat().replace("+00:00", "Z")`` (structlog's
    ``TimeStamper(fmt="iso", utc=True)``), microseconds left out when they are 0, at a
    fraction of its cost."""
    global _second
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached = _second
    if cached[0] != seconds:
        cached = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        _second = cached  # one tuple, so another thread sees an old or a new pair
    micros = nanos // 1000  # floored, as datetime.now() does
    if micros:
        return f"{cached[1]}.{micros:06d}Z"
    return cached[1] + "Z"


def _add_timestamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict["timestamp"] = utc_timestamp()
    return event_dict


def _drop_color_message(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def _json_default(obj: Any) -> Any:
    """What structlog's JSONRenderer falls back to: ``__structlog__()``, else ``repr``."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


def _make_json_encoder() -> Callable[[Any], str]:
    """The fallback of :func:`_render_json`: ``json.dumps(obj, default=_json_default,
    separators=(",", ":"))`` (ASCII only), with the C encoder built once rather than per
    line (a non-default ``default`` makes ``json.dumps`` build a new one on every call).
    It is made without a circular reference check (its memo would be shared by every
    line): scrub_value has copied every container of a line down to 4 levels, and a cycle
    deeper than that is still refused, as a RecursionError instead of a ValueError."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # no C accelerator in this Python
        return json.JSONEncoder(default=_json_default, separators=(",", ":")).encode
    iterencode = c_make_encoder(
        None,  # markers: no circular reference check (above)
        _json_default,  # default
        json.encoder.encode_basestring_ascii,  # ensure_ascii=True
        None,  # indent
        ":",  # key separator
        ",",  # item separator
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )

    def encode(obj: Any) -> str:
        return "".join(iterencode(obj, 0))

    return encode


_encode_json = _make_json_encoder()

# A line is one line of printable ASCII, whatever its values hold, as the stdlib encoder
# writes it: JSON escapes the C0 controls, and these escapes take care of DEL and all
# that is not ASCII (U+2028 and U+2029 end a line for some readers, Python's
# str.splitlines among them, and a stream need not be UTF-8).
_NON_ASCII = re.compile(r"[^\x00-\x7e]")


def _escape_non_ascii(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # RFC 8259 §7: a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """The event as one compact JSON line of ASCII (``{"event":"request",...}``).

    orjson renders it: the stdlib encoder's text cost ~19k instructions a line, a fifth
    of an access-log line (bench/README.md). What orjson refuses (an integer beyond 64
    bits, a key that is not a string, a number or None) goes to the stdlib encoder,
    which gives the same text for what both accept; objects neither knows are rendered
    by ``__structlog__()``, else ``repr``, as structlog's JSONRenderer does. NaN and the
    infinities are written as ``null`` (RFC 8259 has no such numbers; jq refuses them)."""
    try:
        line = orjson.dumps(event_dict, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return _encode_json(event_dict)
    text = line.decode()
    if text.isascii() and "\x7f" not in text:
        return text
    return _NON_ASCII.sub(_escape_non_ascii, text)


# Stdlib records of other libraries: what a structlog line gets, from the record.
_FOREIGN_PRE_CHAIN: list[Processor] = [
    merge_contextvars,
    add_trace_context,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _add_timestamp,
    structlog.stdlib.ExtraAdder(),
    _drop_color_message,
]


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler configure_logging installs (a second call replaces it): stdlib
    records come in through ``emit``, our structlog lines through :meth:`write_line`."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        lock = self.lock
        assert lock is not None  # created by Handler.__init__ (and re-made after a fork)
        # A line-buffered text stream (sys.stderr is, since Python 3.9, on a pipe or a file
        # too) hands a line to the OS as soon as it holds the newline, and a StringIO has
        # nowhere to flush to: an extra flush per line would only cost. Any other stream
        # is flushed after each line, as StreamHandler does, so no line waits in a buffer.
        self._flush_each = not (
            isinstance(stream, io.StringIO) or getattr(stream, "line_buffering", False) is True
        )

    def write_line(self, line: str) -> None:
        """Write one rendered line: one write call, under the handler's lock."""
        lock = self.lock
        assert lock is not None
        with lock:
            try:
                self.stream.write(line + "\n")
                if self._flush_each:
                    self.stream.flush()
            except Exception:  # a log line must never break the caller (as in Handler)
                self.handleError(logging.makeLogRecord({"msg": line}))

    def render_failed(self, logger_name: str) -> None:
        # The line is not shown: it may hold what the redaction had not reached yet.
        record = {"msg": "a line of logger %s could not be rendered", "args": (logger_name,)}
        self.handleError(logging.makeLogRecord(record))


@dataclass(frozen=True, slots=True)
class _Route:
    """Where our loggers' lines go and how they are rendered: one per configuration."""

    handler: _OurHandler
    render: Processor
    json_lines: bool


# Our loggers are cached by structlog on first use (each proxy made at import time keeps
# the bound logger it assembled): assembling one per call was ~11k instructions a line.
# A cached logger must still follow every later configuration (SIGHUP, tests), so nothing
# it holds depends on one: the stream and the renderer are read from `_route`, the level
# from `_threshold`, on every line.
_route: _Route | None = None
_threshold = logging.INFO


class _LineLogger:
    """What our structlog loggers wrap: hands the rendered line to the current handler."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, line: str) -> None:
        route = _route
        if route is not None:
            route.handler.write_line(line)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


class _LineLoggerFactory:
    """structlog logger factory: one :class:`_LineLogger` per logger name."""

    def __init__(self) -> None:
        self._loggers: dict[str, _LineLogger] = {}
        # structlog.get_logger() without a name: the calling module's, as the stdlib's
        # LoggerFactory finds it (past this module's frame).
        self._name_of_caller = structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__])

    def __call__(self, *args: Any) -> _LineLogger:
        name: str = args[0] if args else self._name_of_caller().name
        logger = self._loggers.get(name)
        if logger is None:  # names are the modules' constants: a small set
            logger = self._loggers[name] = _LineLogger(name)
        return logger


_LINE_LOGGERS = _LineLoggerFactory()


def _interpolate(event: str, args: tuple[Any, ...]) -> str:
    """``log.info("%s left", name)``, as structlog's filtering loggers interpolate."""
    if not args:
        return event
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        return event % args[0]
    return event % args


def _level_method(level: int, name: str) -> Callable[..., Any]:
    def method(self: structlog.BoundLoggerBase, event: str, *args: Any, **kw: Any) -> Any:
        if level < _threshold:  # below the configured level: no event dict is built
            return None
        return self._proxy_to_logger(name, _interpolate(event, args), **kw)

    method.__name__ = name
    return method


def _async_method(sync: Callable[..., Any], name: str) -> Callable[..., Any]:
    # structlog's async variants run the line in the executor; ours is one `write` under
    # the handler's lock, which the sync methods already do on the loop.
    async def method(self: structlog.BoundLoggerBase, event: str, *args: Any, **kw: Any) -> Any:
        return sync(self, event, *args, **kw)

    method.__name__ = name
    return method


class _BoundLogger(structlog.BoundLoggerBase):
    """structlog's filtering bound logger (``make_filtering_bound_logger``), built on its
    documented base for custom wrappers, with one difference: the level is read on every
    call, so a logger cached under one configuration follows a new level."""

    debug = _level_method(logging.DEBUG, "debug")
    info = msg = _level_method(logging.INFO, "info")
    warning = warn = _level_method(logging.WARNING, "warning")
    error = _level_method(logging.ERROR, "error")
    critical = fatal = _level_method(logging.CRITICAL, "critical")

    def exception(self, event: str, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self.error(event, *args, **kw)

    def log(self, level: int, event: str, *args: Any, **kw: Any) -> Any:
        if level < _threshold:
            return None
        name = logging.getLevelName(level).lower()
        return self._proxy_to_logger(name, _interpolate(event, args), **kw)

    adebug = _async_method(debug, "adebug")
    ainfo = amsg = _async_method(info, "ainfo")
    awarning = awarn = _async_method(warning, "awarning")
    aerror = _async_method(error, "aerror")
    acritical = afatal = _async_method(critical, "acritical")
    aexception = _async_method(exception, "aexception")


_ADD_STACK = structlog.processors.StackInfoRenderer(additional_ignores=[__name__])


def _process_line(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    """The whole processor chain of our loggers as one function (each processor was a
    call per line): the same keys, in the same order, as the stdlib route gives."""
    route = _route
    if route is None:  # only configure_logging installs this, after setting the route
        raise structlog.DropEvent
    try:
        merge_contextvars(logger, method_name, event_dict)
        event_dict.pop("color_message", None)
        redact_credentials(logger, method_name, event_dict)
        # Added after the redaction: hex ids, the method's level name (a filtering
        # bound logger passes "error" for exception()), a module's logger name and
        # the time hold nothing to scrub.
        add_trace_context(logger, method_name, event_dict)
        event_dict["level"] = method_name
        event_dict["logger"] = logger.name
        event_dict["timestamp"] = utc_timestamp()
        if "stack_info" in event_dict:
            _ADD_STACK(logger, method_name, event_dict)
            if "stack" in event_dict:
                event_dict["stack"] = scrub_value(event_dict["stack"])
        if route.json_lines and "exc_info" in event_dict:
            # An exception's message may quote a header: scrubbed like any value.
            structlog.processors.format_exc_info(logger, method_name, event_dict)
            if "exception" in event_dict:
                event_dict["exception"] = scrub_value(event_dict["exception"])
        return route.render(logger, method_name, event_dict)
    except Exception:  # as a stdlib handler does: report on stderr, never raise
        route.handler.render_failed(str(getattr(logger, "name", "?")))
        raise structlog.DropEvent from None


def _use_console(config: LoggingConfig, stream: IO[str]) -> bool:
    if config.format == "console":
        return True
    if config.format == "json":
        return False
    return _is_tty(stream)


def configure_logging(config: LoggingConfig, *, stream: IO[str] | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (default: stderr), one format.

    Safe to call more than once (tests do, and SIGHUP): the previous handler is replaced.
    """
    out: IO[str] = stream if stream is not None else sys.stderr
    level = _LEVELS[config.level]
    console = _use_console(config, out)

    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if console:
        # Plain tracebacks even when `rich` is installed: rich's formatter prints every
        # frame's local variables, which may hold a token or a secret.
        renderer = structlog.dev.ConsoleRenderer(
            colors=_is_tty(out), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        final.append(structlog.processors.format_exc_info)
        renderer = _render_json
    final += [redact_credentials, renderer]

    handler = _OurHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=_FOREIGN_PRE_CHAIN, processors=final)
    )

    global _route, _threshold
    _route = _Route(handler=handler, render=renderer, json_lines=not console)
    _threshold = level
    structlog.configure(
        processors=[_process_line],
        logger_factory=_LINE_LOGGERS,
        wrapper_class=_BoundLogger,
        context_class=dict,
        # Safe because nothing a cached logger holds depends on this configuration (see
        # `_route`); loggers used before this call were not cached (structlog's default).
        cache_logger_on_first_use=True,
    )

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
