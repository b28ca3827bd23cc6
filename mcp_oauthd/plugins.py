"""Provider and storage types, found through Python entry points.

Every provider type (``provider.type`` in the config) and every storage type
(``storage.type``) is a *plugin*: an entry point in the group ``mcp_oauthd.providers``
or ``mcp_oauthd.storage`` whose name is the type and whose value is a descriptor,
:class:`ProviderPlugin` or :class:`StoragePlugin`. The built-in types register exactly
like third-party ones (see ``[project.entry-points]`` in mcp-oauthd's ``pyproject.toml``),
so there is one path from a YAML ``type`` to a running object::

    [project.entry-points."mcp_oauthd.providers"]
    fixed_user = "mcp_oauthd_example.fixed_user:PLUGIN"

Discovery is lazy and cached: the entry-point metadata is read on first use, and an entry
point is imported only when its type is asked for (or when everything is listed, by
``mcp-oauthd plugins``). A plugin that fails to import is recorded with its distribution
and error and never takes anything else down; naming its type in a config is an error
that says which plugin failed and why. See ``docs/extending.md``.

Nothing here imports the providers, the storage backends or the config models at import
time: the config models call into this module while validating, and the built-in
descriptors import the config models.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

if TYPE_CHECKING:
    from mcp_oauthd.clock import Clock
    from mcp_oauthd.providers.base import Provider
    from mcp_oauthd.storage.base import Storage

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "PROVIDER_GROUP",
    "STORAGE_GROUP",
    "PluginError",
    "PluginFailure",
    "PluginInfo",
    "PluginLoadFailed",
    "ProviderFactory",
    "ProviderPlugin",
    "Registry",
    "StorageFactory",
    "StoragePlugin",
    "UnknownPluginType",
    "providers",
    "registry_for",
    "reset",
    "storage",
    "validate_config",
]

PROVIDER_GROUP = "mcp_oauthd.providers"
STORAGE_GROUP = "mcp_oauthd.storage"
BUILTIN_DISTRIBUTION = "mcp-oauthd"

Kind = Literal["provider", "storage"]

# Where the built-in descriptors live. Used only when the installed metadata does not
# declare them (mcp-oauthd run from a source tree that was never pip-installed): the
# entry points in pyproject.toml are the source of truth and name the same objects.
_BUILTIN_TARGETS: dict[Kind, dict[str, str]] = {
    "provider": {
        "local": "mcp_oauthd.providers.local:PLUGIN",
        "oidc": "mcp_oauthd.providers.oidc:PLUGIN",
        "google": "mcp_oauthd.providers.google:PLUGIN",
        "github": "mcp_oauthd.providers.github:PLUGIN",
    },
    "storage": {
        "memory": "mcp_oauthd.storage.memory:PLUGIN",
        "sqlite": "mcp_oauthd.storage.sqlite:PLUGIN",
        "redis": "mcp_oauthd.storage.redis:PLUGIN",
    },
}

_MAX_ERROR = 300  # characters of a load error kept: one readable line


# --------------------------------------------------------------------------- descriptors
class ProviderFactory(Protocol):
    """Builds a provider from its validated config. Called once per app, before serving;
    network work belongs in the provider's ``start()``, not here."""

    def __call__(
        self, config: Any, /, *, issuer: str, storage: Storage, clock: Clock
    ) -> Provider: ...


class StorageFactory(Protocol):
    """Builds a storage backend from its validated config, without connecting (the daemon
    awaits ``open()`` afterwards)."""

    def __call__(self, config: Any, /) -> Storage: ...


@dataclass(frozen=True)
class ProviderPlugin:
    """What an ``mcp_oauthd.providers`` entry point resolves to.

    ``name`` is the config ``type`` (and the entry point's name); ``config_model`` is the
    pydantic model of the ``provider:`` section, normally a subclass of
    :class:`~mcp_oauthd.config.models.PluginConfig` with ``type: Literal["<name>"]``;
    ``factory(config, *, issuer, storage, clock)`` returns the provider, whose ``name``
    must equal ``name``.
    """

    name: str
    config_model: type[BaseModel]
    factory: ProviderFactory


@dataclass(frozen=True)
class StoragePlugin:
    """What an ``mcp_oauthd.storage`` entry point resolves to: the config ``type``, the
    model of the ``storage:`` section and ``factory(config) -> Storage``."""

    name: str
    config_model: type[BaseModel]
    factory: StorageFactory


Descriptor = ProviderPlugin | StoragePlugin
D = TypeVar("D", bound=Descriptor)


@dataclass(frozen=True)
class PluginInfo:
    """A type that loaded: where it came from (for ``mcp-oauthd plugins``)."""

    kind: Kind
    name: str
    distribution: str | None
    version: str | None
    target: str  # "module:attribute" of the descriptor
    config_model: str  # "module.Class"

    @property
    def builtin(self) -> bool:
        return _normalise(self.distribution or "") == BUILTIN_DISTRIBUTION


@dataclass(frozen=True)
class PluginFailure:
    """A type that could not be loaded, and why (one line, for people)."""

    kind: Kind
    name: str
    distribution: str | None
    version: str | None
    target: str
    error: str
    ambiguous: bool = False  # several distributions declare this type

    @property
    def origin(self) -> str:
        if self.distribution is None:
            return "an unknown distribution"
        return f"{self.distribution} {self.version}" if self.version else self.distribution


class PluginError(Exception):
    """A provider or storage type cannot be used. The message says which and why."""


class UnknownPluginType(PluginError):
    def __init__(
        self, kind: Kind, name: str, available: list[str], failures: list[PluginFailure]
    ) -> None:
        self.kind = kind
        self.name = name
        self.available = available
        self.failures = failures
        super().__init__(f"unknown {kind} type {name!r}; {_available_hint(available, failures)}")


class PluginLoadFailed(PluginError):
    def __init__(self, failure: PluginFailure) -> None:
        self.failure = failure
        super().__init__(_failure_message(failure))


def _normalise(distribution: str) -> str:
    # PEP 503 name normalisation: "MCP_OAuthd" and "mcp-oauthd" are one distribution.
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


def _failure_message(failure: PluginFailure) -> str:
    if failure.ambiguous:
        return f"{failure.kind} type {failure.name!r} is declared by {failure.error}"
    return (
        f"{failure.kind} type {failure.name!r} comes from plugin {failure.origin} "
        f"which failed to load: {failure.error}"
    )


def _available_hint(available: Iterable[str], failures: Iterable[PluginFailure]) -> str:
    text = "available types: " + ", ".join(available)
    broken = [f"{f.name} (from {f.origin}: {f.error})" for f in failures]
    if broken:
        text += "; plugins that failed to load: " + "; ".join(broken)
    return text


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Source:
    """One entry point declaring a type, with the distribution that declares it."""

    target: str  # "module:attribute"
    distribution: str | None
    version: str | None
    entry_point: EntryPoint | None = None  # None: a built-in found without metadata

    @property
    def builtin(self) -> bool:
        return _normalise(self.distribution or "") == BUILTIN_DISTRIBUTION

    @property
    def origin(self) -> str:
        return f"{self.distribution or '?'} {self.version or ''}".strip()

    def load(self) -> Any:
        if self.entry_point is not None:
            return self.entry_point.load()
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    @classmethod
    def of(cls, ep: EntryPoint) -> _Source:
        dist = getattr(ep, "dist", None)
        if dist is None:
            return cls(ep.value, None, None, ep)
        return cls(ep.value, str(dist.name), str(dist.version), ep)


@dataclass
class _Slot:
    """One type name: the entry points declaring it, and what loading it gave."""

    sources: list[_Source] = field(default_factory=list)
    descriptor: Descriptor | None = None
    info: PluginInfo | None = None
    failure: PluginFailure | None = None
    ignored: list[PluginFailure] = field(default_factory=list)  # plugins shadowing a built-in
    loaded: bool = False


class Registry(Generic[D]):
    """The types of one entry-point group. Discovery happens on first use and is cached;
    :meth:`clear` forgets everything (tests that install plugins at run time call it)."""

    def __init__(self, kind: Kind, group: str, descriptor: type[D]) -> None:
        self.kind: Kind = kind
        self.group = group
        self._descriptor: type[D] = descriptor
        self._slots: dict[str, _Slot] | None = None

    def clear(self) -> None:
        self._slots = None

    # ------------------------------------------------------------------ discovery
    def _discover(self) -> dict[str, _Slot]:
        if self._slots is None:
            slots: dict[str, _Slot] = {}
            for ep in entry_points(group=self.group):
                slots.setdefault(ep.name, _Slot()).sources.append(_Source.of(ep))
            for name, target in _BUILTIN_TARGETS[self.kind].items():
                slot = slots.setdefault(name, _Slot())
                if not any(source.builtin for source in slot.sources):
                    from mcp_oauthd import __version__

                    source = _Source(target, BUILTIN_DISTRIBUTION, f"{__version__} (source tree)")
                    slot.sources.insert(0, source)
            self._slots = slots
        return self._slots

    def names(self) -> list[str]:
        """Every declared type, loaded or not: built-ins first, then plugins by name."""
        slots = self._discover()
        builtin = [n for n in _BUILTIN_TARGETS[self.kind] if n in slots]
        return builtin + sorted(n for n in slots if n not in _BUILTIN_TARGETS[self.kind])

    def _load(self, name: str, slot: _Slot) -> None:
        if slot.loaded:
            return
        slot.loaded = True
        candidates = [s for s in slot.sources if s.builtin][:1] or slot.sources
        # A plugin never replaces a built-in type (a package must not be able to swap the
        # local login or the token store by declaring the same name): built-ins win, and
        # the attempt is reported, never imported.
        if candidates != slot.sources:
            slot.ignored = [
                PluginFailure(
                    self.kind,
                    name,
                    s.distribution,
                    s.version,
                    s.target,
                    f"declares the built-in {self.kind} type {name!r}, which a plugin cannot "
                    "replace; ignored",
                )
                for s in slot.sources
                if not s.builtin
            ]
        source = candidates[0]

        def fail(error: str, *, ambiguous: bool = False) -> None:
            slot.failure = PluginFailure(
                self.kind,
                name,
                source.distribution,
                source.version,
                source.target,
                error,
                ambiguous,
            )

        if len(candidates) > 1:
            origins = ", ".join(sorted(s.origin for s in candidates))
            fail(f"several plugins ({origins}); uninstall all but one", ambiguous=True)
            return
        try:
            obj = source.load()
        except Exception as exc:  # a broken plugin must not take the daemon down
            fail(_one_line(exc))
            return
        if not isinstance(obj, self._descriptor):
            kind = type(obj).__name__
            fail(f"{source.target} must be a {self._descriptor.__name__}, not {kind!r}")
            return
        if obj.name != name:
            fail(f"entry point {name!r} names a plugin called {obj.name!r}; make them equal")
            return
        model = obj.config_model
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            fail(f"{source.target}: config_model is not a pydantic model class")
            return
        if not callable(obj.factory):
            fail(f"{source.target}: factory is not callable")
            return
        slot.descriptor = obj
        slot.info = PluginInfo(
            self.kind,
            name,
            source.distribution,
            source.version,
            source.target,
            f"{model.__module__}.{model.__qualname__}",
        )

    # ------------------------------------------------------------------ lookups
    def get(self, name: str) -> D:
        """The descriptor of type ``name``, importing its plugin on first use.

        Raises :class:`UnknownPluginType` (with every available type and every load
        failure) or :class:`PluginLoadFailed`.
        """
        slot = self._discover().get(name)
        if slot is None:
            self.load_all()
            raise UnknownPluginType(self.kind, name, self.available(), self.failures())
        self._load(name, slot)
        if slot.failure is not None:
            raise PluginLoadFailed(slot.failure)
        assert isinstance(slot.descriptor, self._descriptor)
        return slot.descriptor

    def loaded(self, name: str) -> D | None:
        """The descriptor of ``name`` if it is already loaded; never imports anything."""
        slot = (self._slots or {}).get(name)
        descriptor = slot.descriptor if slot is not None else None
        return descriptor if isinstance(descriptor, self._descriptor) else None

    def info(self, name: str) -> PluginInfo | None:
        """Where the already-loaded type ``name`` came from; never imports anything."""
        slot = (self._slots or {}).get(name)
        return slot.info if slot is not None else None

    def load_all(self) -> None:
        for name, slot in self._discover().items():
            self._load(name, slot)

    def available(self) -> list[str]:
        """Types that are declared and did not fail (all of them once :meth:`load_all`
        has run)."""
        slots = self._discover()
        return [n for n in self.names() if slots[n].failure is None]

    def infos(self) -> list[PluginInfo]:
        """Every type that loads, with its origin (imports every plugin)."""
        self.load_all()
        slots = self._discover()
        return [info for n in self.names() if (info := slots[n].info) is not None]

    def failures(self) -> list[PluginFailure]:
        """Every type that failed to load, and every plugin ignored for shadowing a
        built-in (once loaded: :meth:`load_all` finds them all)."""
        slots = self._discover()
        found: list[PluginFailure] = []
        for name in self.names():
            slot = slots[name]
            found.extend([slot.failure] if slot.failure is not None else [])
            found.extend(slot.ignored)
        return found


providers: Registry[ProviderPlugin] = Registry("provider", PROVIDER_GROUP, ProviderPlugin)
storage: Registry[StoragePlugin] = Registry("storage", STORAGE_GROUP, StoragePlugin)


def registry_for(kind: Kind) -> Registry[ProviderPlugin] | Registry[StoragePlugin]:
    return providers if kind == "provider" else storage


def reset() -> None:
    """Forget what was discovered, so plugins installed since are found (tests)."""
    importlib.invalidate_caches()  # importlib.metadata caches directory listings too
    providers.clear()
    storage.clear()
    _adapter.cache_clear()


# --------------------------------------------------------------------------- config
@functools.lru_cache(maxsize=64)
def _adapter(model: type[BaseModel]) -> TypeAdapter[dict[str, BaseModel]]:
    # Validating {type: section} as a mapping puts the type in every error location,
    # ("fixed_user", "username"), as the built-in discriminated unions do; the config
    # loader drops it again when it renders the dotted path.
    return TypeAdapter(dict[str, model])  # type: ignore[valid-type]


def _error(kind: str, message: str, hint: str, tag: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "plugin",
        [
            InitErrorDetails(
                type=PydanticCustomError(kind, "{message}", {"message": message, "hint": hint}),
                loc=("type",),
                input=tag,
            )
        ],
    )


def validate_config(kind: Kind, value: Mapping[str, Any], context: Any = None) -> BaseModel:
    """Validate a ``provider:`` / ``storage:`` section whose ``type`` is not built in
    against the config model of the plugin that registers that type.

    Raises ``ValidationError``: the plugin's own errors (located under the type, like a
    built-in variant's), or ``plugin_unknown_type`` / ``plugin_load_failed`` at ``type``
    with a ``hint`` in the error context.
    """
    registry = registry_for(kind)
    tag = str(value.get("type"))
    try:
        plugin = registry.get(tag)
    except UnknownPluginType as exc:
        close = difflib.get_close_matches(tag, exc.available, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "use one of " + ", ".join(exc.available)
        if exc.failures:
            hint += "; plugins that failed to load: " + "; ".join(
                f"{f.name} (from {f.origin}: {f.error})" for f in exc.failures
            )
        raise _error("plugin_unknown_type", "unknown type", hint, tag) from None
    except PluginLoadFailed as exc:
        raise _error(
            "plugin_load_failed",
            str(exc),
            "fix or reinstall that plugin (`mcp-oauthd plugins` lists what is installed), "
            "or choose another type",
            tag,
        ) from None
    result = _adapter(plugin.config_model).validate_python({tag: dict(value)}, context=context)
    return result[tag]


# --------------------------------------------------------------------------- listing
def _info_row(info: PluginInfo) -> dict[str, Any]:
    return {
        "kind": info.kind,
        "type": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "builtin": info.builtin,
        "target": info.target,
        "config_model": info.config_model,
    }


def _failure_row(failure: PluginFailure) -> dict[str, Any]:
    return {
        "kind": failure.kind,
        "type": failure.name,
        "distribution": failure.distribution,
        "version": failure.version,
        "target": failure.target,
        "error": failure.error,
    }


def inventory() -> dict[str, list[dict[str, Any]]]:
    """Every provider and storage type, where it comes from, and every load failure
    (imports every plugin: this is what ``mcp-oauthd plugins`` shows)."""
    loaded = [*providers.infos(), *storage.infos()]
    failed = [*providers.failures(), *storage.failures()]
    return {
        "types": [_info_row(info) for info in loaded],
        "failures": [_failure_row(failure) for failure in failed],
    }


def render_inventory(data: Mapping[str, list[dict[str, Any]]]) -> str:
    """``inventory()`` as a table for people."""
    rows = [("KIND", "TYPE", "DISTRIBUTION", "VERSION", "FROM")]
    for row in data["types"]:
        origin = str(row["distribution"] or "?") + (" (built in)" if row["builtin"] else "")
        rows.append((row["kind"], row["type"], origin, row["version"] or "-", row["target"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]
    if data["failures"]:
        lines += ["", "failed to load:"]
        for row in data["failures"]:
            origin = f"{row['distribution'] or '?'} {row['version'] or ''}".strip()
            lines.append(f"  {row['kind']} type {row['type']!r} from {origin}: {row['error']}")
    return "\n".join(lines)
