"""Finding and loading driver plugins through stevedore."""

from __future__ import annotations

import importlib.metadata
from typing import Any, NamedTuple

import stevedore
from stevedore.extension import Extension, ExtensionManager
from stevedore.named import NamedExtensionManager

from powerdrivers._capabilities import REQUIRED_CAPABILITIES, Capability
from powerdrivers._driver import Driver
from powerdrivers._exceptions import (
    DriverConflict,
    DriverLoadError,
    DriverNotFound,
    IncompatibleDriver,
    PowerDriversError,
)
from powerdrivers._native import NativeStateTable
from powerdrivers._version import SUPPORTED_INTERFACE_RANGE, is_compatible, parse_interface_version

#: The entry-point group drivers register in.
NAMESPACE = "powerdrivers.drivers"

_PRIMITIVES = {
    Capability.SHUTDOWN: ("_request_shutdown",),
    Capability.REBOOT: ("_request_reboot",),
    Capability.HARD_REBOOT: ("_hard_reboot",),
    Capability.PAUSE: ("_pause", "_unpause"),
    Capability.SUSPEND: ("_suspend", "_resume"),
    Capability.SPAWN: ("_spawn",),
    Capability.DELETE: ("_delete",),
    Capability.VCPU_STATS: ("_vcpu_stats",),
    Capability.NATIVE_EVENTS: ("_start_native_events",),
}
#: Primitives the core builds from another when a driver implements only that one.
_BUILT_FROM = {"_vcpu_stats": "_vcpu_counters"}


class DriverInfo(NamedTuple):
    """What ``available_drivers`` knows about one installed driver plugin.

    ``status`` is ``"ok"`` or ``"error"``; on error, ``error`` says why and
    the fields the plugin could not provide are ``None`` or empty.
    """

    name: str
    distribution: str | None
    version: str | None
    interface_version: str | None
    capabilities: tuple[str, ...]
    status: str
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "interface_version": self.interface_version,
            "capabilities": list(self.capabilities),
            "status": self.status,
            "error": self.error,
        }


def load_driver(name: str, uri: str | None = None, **options: Any) -> Driver:
    """Load the driver plugin registered as ``name`` and connect it to ``uri``.

    ``options`` are passed to the driver (strings from a command line, or
    typed values from code; secrets as :class:`powerdrivers.Secret`).
    Raises :class:`DriverNotFound`, :class:`DriverLoadError`,
    :class:`DriverConflict` or :class:`IncompatibleDriver` before anything
    is connected, and the driver's own typed errors after.
    """
    driver_class = load_driver_class(name)
    try:
        return driver_class(uri, **options)
    except PowerDriversError:
        raise
    except TypeError as error:
        raise DriverLoadError(name, _distribution_of(name), f"cannot be constructed: {error}") from error
    except Exception as error:
        raise DriverLoadError(name, _distribution_of(name), f"{type(error).__name__}: {error}") from error


def load_driver_class(name: str) -> type[Driver]:
    """Find, import and validate the driver class registered as ``name``, without connecting."""
    entry_points = _entry_points()
    installed = {entry_point.name for entry_point in entry_points}
    # Checked here rather than through stevedore's NoMatches: DriverManager
    # logs a warning of its own for a missing name before raising.
    if name not in installed:
        raise DriverNotFound(name, installed)
    # And conflicts too: stevedore before 5.10 does not pass a driver's duplicates to the
    # conflict resolver, and raises its own MultipleMatches.
    registered = [entry_point for entry_point in entry_points if entry_point.name == name]
    if len(registered) > 1:
        distributions = _distributions_by_entry_point()
        raise DriverConflict(
            name,
            (distributions.get((ep.name, ep.value), (ep.value, None))[0] for ep in registered),
        )
    manager: stevedore.DriverManager[Driver] = stevedore.DriverManager(
        NAMESPACE,
        name,
        on_load_failure_callback=_raise_load_error,
        conflict_resolver=_raise_conflict,
    )
    plugin: object = manager.driver
    validate_driver_class(name, plugin, _distribution_of)
    assert isinstance(plugin, type) and issubclass(plugin, Driver)  # validated above
    return plugin


def available_drivers() -> list[DriverInfo]:
    """Describe every installed driver plugin; a broken one is reported, not raised.

    Drivers are sorted by name. Two distributions registering one name both
    appear, each with an error naming the other.
    """
    distributions = _distributions_by_entry_point()
    failures: dict[tuple[str, str], str] = {}

    def record_failure(_: object, entry_point: importlib.metadata.EntryPoint, error: BaseException) -> None:
        failures[(entry_point.name, entry_point.value)] = f"{type(error).__name__}: {error}"

    manager: ExtensionManager[Driver] = ExtensionManager(NAMESPACE, on_load_failure_callback=record_failure)
    loaded = {(ext.entry_point.name, ext.entry_point.value): ext for ext in manager.extensions}
    entry_points = manager.list_entry_points()
    registrants: dict[str, list[str]] = {}
    for entry_point in entry_points:
        dist = distributions.get((entry_point.name, entry_point.value))
        registrants.setdefault(entry_point.name, []).append(dist[0] if dist else entry_point.value)

    infos = []
    for entry_point in entry_points:
        key = (entry_point.name, entry_point.value)
        dist_name, dist_version = distributions.get(key, (None, None))
        infos.append(
            _describe(
                entry_point.name, dist_name, dist_version, loaded.get(key), failures.get(key), registrants
            )
        )
    return sorted(infos, key=lambda info: (info.name, info.distribution or ""))


def validate_driver_class(
    name: str,
    plugin: object,
    distribution_of: Any = None,
) -> None:
    """Check that ``plugin`` is a usable driver class; raise a typed error naming what is wrong.

    Checks, in order: a concrete :class:`Driver` subclass; a declared,
    compatible ``interface_version``; ``capabilities`` made of
    :class:`Capability` and including the required ones, each with its
    primitive implemented; a :class:`NativeStateTable` in ``native_states``.
    """

    def fail(cause: str) -> DriverLoadError:
        return DriverLoadError(name, distribution_of(name) if distribution_of else None, cause)

    if not (isinstance(plugin, type) and issubclass(plugin, Driver)):
        qualname = getattr(plugin, "__qualname__", type(plugin).__name__)
        what = f"{getattr(plugin, '__module__', '?')}.{qualname}"
        raise fail(f"entry point gives {what}, which is not a subclass of powerdrivers.Driver")
    if getattr(plugin, "__abstractmethods__", None):
        missing = ", ".join(sorted(plugin.__abstractmethods__))
        raise fail(f"{plugin.__qualname__} does not implement {missing}")
    declared = getattr(plugin, "interface_version", None)
    if not isinstance(declared, str):
        raise fail(f"{plugin.__qualname__} does not declare interface_version (a 'MAJOR.MINOR' string)")
    try:
        parse_interface_version(declared)
    except ValueError as error:
        raise fail(str(error)) from None
    if not is_compatible(declared):
        raise IncompatibleDriver(name, declared, SUPPORTED_INTERFACE_RANGE)
    capabilities = getattr(plugin, "capabilities", None)
    if not isinstance(capabilities, frozenset) or not all(isinstance(c, Capability) for c in capabilities):
        raise fail(f"{plugin.__qualname__}.capabilities must be a frozenset of powerdrivers.Capability")
    missing_required = REQUIRED_CAPABILITIES - capabilities
    if missing_required:
        raise fail("does not declare the required capabilities " + ", ".join(sorted(missing_required)))
    for capability in sorted(capabilities):
        for primitive in _PRIMITIVES.get(capability, ()):
            if getattr(plugin, primitive) is getattr(Driver, primitive):
                source = _BUILT_FROM.get(primitive)
                if source is None or getattr(plugin, source) is getattr(Driver, source):
                    named = primitive if source is None else f"{primitive} or {source}"
                    raise fail(f"declares capability {capability.value} but does not implement {named}")
    if not isinstance(getattr(plugin, "native_states", None), NativeStateTable):
        raise fail(f"{plugin.__qualname__}.native_states must be a powerdrivers.NativeStateTable")
    if not isinstance(getattr(plugin, "name", None), str) or not plugin.name:
        raise fail(f"{plugin.__qualname__} does not declare its name")


def _describe(
    name: str,
    distribution: str | None,
    version: str | None,
    extension: Extension[Driver] | None,
    failure: str | None,
    registrants: dict[str, list[str]],
) -> DriverInfo:
    others = [other for other in registrants[name] if other != distribution]
    error = failure
    plugin: type[Driver] | None = extension.plugin if extension is not None else None
    if error is None and plugin is not None:
        try:
            validate_driver_class(name, plugin)
        except PowerDriversError as invalid:
            error = str(invalid)
    if error is None and others:
        error = f"name {name!r} is also registered by {', '.join(others)}"
    usable = error is None and plugin is not None
    return DriverInfo(
        name=name,
        distribution=distribution,
        version=version,
        interface_version=getattr(plugin, "interface_version", None) if usable else None,
        capabilities=tuple(sorted(c.value for c in plugin.capabilities)) if usable and plugin else (),
        status="ok" if usable else "error",
        error=error,
    )


def _raise_load_error(_: object, entry_point: importlib.metadata.EntryPoint, error: BaseException) -> None:
    raise DriverLoadError(
        entry_point.name, _distribution_of(entry_point.name), f"{type(error).__name__}: {error}"
    )


def _raise_conflict(namespace: str, name: str, extensions: list[Extension[Driver]]) -> Extension[Driver]:
    distributions = _distributions_by_entry_point()
    raise DriverConflict(
        name,
        (
            distributions.get((ext.entry_point.name, ext.entry_point.value), (ext.entry_point.value, None))[0]
            for ext in extensions
        ),
    )


def installed_driver_names() -> list[str]:
    """Return the name of every installed driver entry point, sorted, importing no plugin.

    Cheap, unlike :func:`available_drivers`, which imports every plugin to
    describe it; a name registered twice appears once.
    """
    return sorted({entry_point.name for entry_point in _entry_points()})


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    # A manager asked for no names loads none, and lists the group from stevedore's entry-point cache.
    scanner: NamedExtensionManager[Driver] = NamedExtensionManager(NAMESPACE, names=())
    return list(scanner.list_entry_points())


def _distribution_of(name: str) -> str | None:
    for (entry_name, _), (distribution, _version) in _distributions_by_entry_point().items():
        if entry_name == name:
            return distribution
    return None


def _distributions_by_entry_point() -> dict[tuple[str, str], tuple[str, str]]:
    """Map (entry-point name, value) to (distribution name, version).

    stevedore's entry-point cache does not keep the distribution, so this
    scans the installed metadata; it runs only to describe or report, never
    on the path that loads a driver successfully.
    """
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for distribution in importlib.metadata.distributions():
        for entry_point in distribution.entry_points:
            if entry_point.group == NAMESPACE:
                found.setdefault(
                    (entry_point.name, entry_point.value),
                    (distribution.metadata["Name"], distribution.version),
                )
    return found
