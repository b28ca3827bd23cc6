"""Transparent wrappers that time and trace every storage and upstream provider call.

``instrument_storage(storage, metrics, tracing)`` returns a proxy that times each
coroutine method of the :class:`~mcp_oauthd.storage.base.Storage` protocol (so every
backend, present and future, is covered without touching it) into ``storage_*`` metrics
and, inside a traced request, a ``storage.<operation>`` span. ``instrument_provider`` does
the same for the :class:`~mcp_oauthd.providers.base.Provider` calls (``provider_*``,
``provider.<operation>`` spans).

Both return the object unchanged when neither metrics nor tracing is on: the default
``tracing.exporter: none`` with metrics off costs nothing.

The proxies forward every other attribute to the wrapped object and report its class
(``isinstance(proxy, LocalProvider)`` holds), so code that checks for a concrete backend
or provider keeps working. Span attributes are the backend/provider name and the
operation; never an argument, a result or an exception message (those may hold a
credential or a user id).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from mcp_oauthd.observability.metrics import Metrics
from mcp_oauthd.observability.tracing import Tracing
from mcp_oauthd.providers.base import Provider, UpstreamError
from mcp_oauthd.storage.base import GrantRevoked, Storage, StorageUnavailable

__all__ = [
    "PROVIDER_OPERATIONS",
    "STORAGE_OPERATIONS",
    "InstrumentedProvider",
    "InstrumentedStorage",
    "instrument_provider",
    "instrument_storage",
    "unwrap",
]

T = TypeVar("T")


def _coroutine_methods(protocol: type) -> frozenset[str]:
    return frozenset(
        name
        for name, member in vars(protocol).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    )


# Bounded by the protocols: the operation label can never take a caller-chosen value.
STORAGE_OPERATIONS = _coroutine_methods(Storage)
# close() is housekeeping, not an upstream call.
PROVIDER_OPERATIONS = _coroutine_methods(Provider) - {"close"}


class _Proxy:
    """Forwards attributes to ``_inner``; wraps the named coroutine methods once."""

    _operations: frozenset[str] = frozenset()

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)

    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:
        return type(object.__getattribute__(self, "_inner"))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(object.__getattribute__(self, "_inner"), name)
        if name in self._operations and callable(attr):
            wrapped = self._wrap(name, attr)
            object.__setattr__(self, name, wrapped)  # wrap once, then a plain lookup
            return wrapped
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_inner"), name, value)

    def __repr__(self) -> str:
        return f"<instrumented {object.__getattribute__(self, '_inner')!r}>"

    def _wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        raise NotImplementedError


def unwrap(obj: T) -> T:
    """The object behind an instrumentation proxy (or ``obj`` itself)."""
    if type(obj) in (InstrumentedStorage, InstrumentedProvider):
        return cast(T, object.__getattribute__(obj, "_inner"))
    return obj


def _storage_result(exc: BaseException) -> str:
    if isinstance(exc, GrantRevoked):
        return "conflict"  # a benign race the service handles, not a backend fault
    if isinstance(exc, StorageUnavailable):
        return "unavailable"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


def _in_request() -> bool:
    """Storage spans only under a request span: housekeeping (gc, gauges) makes no traces."""
    return trace.get_current_span().get_span_context().is_valid


class InstrumentedStorage(_Proxy):
    _operations = STORAGE_OPERATIONS

    def __init__(self, inner: Storage, metrics: Metrics | None, tracer: Tracer | None) -> None:
        super().__init__(inner)
        object.__setattr__(self, "_metrics", metrics)
        object.__setattr__(self, "_tracer", tracer)
        object.__setattr__(self, "_backend", str(getattr(inner, "name", type(inner).__name__)))

    def _wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        metrics: Metrics | None = object.__getattribute__(self, "_metrics")
        tracer: Tracer | None = object.__getattribute__(self, "_tracer")
        backend: str = object.__getattribute__(self, "_backend")
        span_name = f"storage.{name}"
        attributes = {"db.system.name": backend, "db.operation.name": name}
        observe = metrics.storage_observer(backend, name) if metrics is not None else None

        if tracer is None and observe is not None:
            timed = observe

            # Metrics only (the default): no span machinery on every storage call.
            @functools.wraps(method)
            async def call_timed(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    result = await method(*args, **kwargs)
                except BaseException as exc:
                    timed(_storage_result(exc), time.perf_counter() - started)
                    raise
                timed("ok", time.perf_counter() - started)
                return result

            return call_timed

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            span: AbstractContextManager[Any] = nullcontext()
            if tracer is not None and _in_request():
                span = tracer.start_as_current_span(
                    span_name,
                    kind=SpanKind.CLIENT,
                    attributes=attributes,
                    record_exception=False,
                    set_status_on_exception=False,
                )
            started = time.perf_counter()
            result = "ok"
            with span as current:
                try:
                    return await method(*args, **kwargs)
                except BaseException as exc:
                    result = _storage_result(exc)
                    if current is not None:
                        current.set_attribute("error.type", type(exc).__name__)
                        if result != "conflict":
                            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                finally:
                    if observe is not None:
                        observe(result, time.perf_counter() - started)

        return call

    def __getattr__(self, name: str) -> Any:
        if name == "get_access_token_now":
            return self._now_lookup()
        return super().__getattr__(name)

    def _now_lookup(self) -> Callable[[str], Any]:
        """The synchronous access-token lookup (``ReadsAccessTokensNow``), timed under the
        same operation label as ``get_access_token``. Not offered with tracing on (a span
        per lookup is the async path's business) nor when the backend lacks it: an
        AttributeError sends the caller to ``get_access_token``."""
        inner = object.__getattribute__(self, "_inner")
        metrics: Metrics | None = object.__getattribute__(self, "_metrics")
        if object.__getattribute__(self, "_tracer") is not None:
            raise AttributeError("get_access_token_now")
        method: Callable[[str], Any] = inner.get_access_token_now  # AttributeError: not offered
        if metrics is not None:
            timed = metrics.storage_observer(
                object.__getattribute__(self, "_backend"), "get_access_token"
            )
            untimed = method

            def method(token_hash: str) -> Any:
                started = time.perf_counter()
                try:
                    result = untimed(token_hash)
                except BaseException as exc:
                    timed(_storage_result(exc), time.perf_counter() - started)
                    raise
                timed("ok", time.perf_counter() - started)
                return result

        object.__setattr__(self, "get_access_token_now", method)  # then a plain lookup
        return method


class InstrumentedProvider(_Proxy):
    _operations = PROVIDER_OPERATIONS

    def __init__(self, inner: Provider, metrics: Metrics | None, tracer: Tracer | None) -> None:
        super().__init__(inner)
        object.__setattr__(self, "_metrics", metrics)
        object.__setattr__(self, "_tracer", tracer)

    def _wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        metrics: Metrics | None = object.__getattribute__(self, "_metrics")
        tracer: Tracer | None = object.__getattribute__(self, "_tracer")
        provider = str(getattr(object.__getattribute__(self, "_inner"), "name", "unknown"))
        span_name = f"provider.{name}"
        attributes = {"mcp_oauthd.provider": provider, "mcp_oauthd.provider.operation": name}

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            span: AbstractContextManager[Any] = nullcontext()
            if tracer is not None:
                span = tracer.start_as_current_span(
                    span_name,
                    kind=SpanKind.INTERNAL,
                    attributes=attributes,
                    record_exception=False,
                    set_status_on_exception=False,
                )
            started = time.perf_counter()
            error: str | None = None
            with span as current:
                try:
                    return await method(*args, **kwargs)
                except UpstreamError as exc:
                    error = exc.kind
                    raise
                except asyncio.CancelledError:
                    error = "cancelled"
                    raise
                except Exception:
                    error = "exception"
                    raise
                finally:
                    if current is not None and error is not None:
                        # The kind only: an upstream message is for logs, not for traces.
                        current.set_attribute("error.type", error)
                        current.set_status(Status(StatusCode.ERROR, error))
                    if metrics is not None:
                        metrics.observe_provider(
                            provider, name, error, time.perf_counter() - started
                        )

        return call


def instrument_storage(
    storage: Storage, metrics: Metrics | None, tracing: Tracing | None
) -> Storage:
    if metrics is None and tracing is None:
        return storage
    tracer = tracing.tracer if tracing is not None else None
    return cast(Storage, InstrumentedStorage(storage, metrics, tracer))


def instrument_provider(
    provider: Provider, metrics: Metrics | None, tracing: Tracing | None
) -> Provider:
    if metrics is None and tracing is None:
        return provider
    tracer = tracing.tracer if tracing is not None else None
    return cast(Provider, InstrumentedProvider(provider, metrics, tracer))
