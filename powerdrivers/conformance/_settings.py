"""What the kit was told about the driver under test."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from powerdrivers._driver import Driver
from powerdrivers._exceptions import DriverLoadError, InvalidSpec
from powerdrivers._loader import load_driver_class, validate_driver_class
from powerdrivers._spec import InstanceSpec


@dataclass(frozen=True)
class KitSettings:
    """The driver under test and how the kit may use it.

    ``driver`` is an installed driver name or ``package.module:Class`` for a
    driver not yet registered; ``instances`` are existing instances the kit
    may power on and off; with ``spawn`` it creates (and deletes) its own
    from ``spec``. ``timeout_s`` bounds guest-dependent operations and
    ``event_timeout_s`` the wait for an event.
    """

    driver: str
    uri: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    instances: tuple[str, ...] = ()
    spawn: bool = False
    spec: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    event_timeout_s: float = 10.0

    def driver_class(self) -> type[Driver]:
        """Load and validate the driver class without connecting.

        Raises :class:`~powerdrivers.DriverNotFound` for an installed name
        that is not there, and :class:`~powerdrivers.DriverLoadError` for a
        ``package.module:Class`` that cannot be imported or found, or for a
        class that is not a usable driver.
        """
        module_name, colon, attribute = self.driver.partition(":")
        if not colon:
            return load_driver_class(self.driver)
        plugin = _import_class(self.driver, module_name, attribute)
        validate_driver_class(self.driver, plugin)
        assert isinstance(plugin, type) and issubclass(plugin, Driver)
        return plugin

    def connect(self) -> Driver:
        """Construct the driver as the loader would, with ``uri`` and ``options``.

        Raises what :meth:`driver_class` raises, and what the driver's
        constructor raises: :class:`~powerdrivers.InvalidURI`,
        :class:`~powerdrivers.InvalidOption` or a
        :class:`~powerdrivers.HypervisorConnectionError`.
        """
        options: dict[str, Any] = dict(self.options)
        return self.driver_class()(self.uri, **options)

    def instance_spec(self, name: str) -> InstanceSpec:
        """Return the spec of an instance the kit spawns, named ``name``.

        Raises :class:`~powerdrivers.InvalidSpec` for a key that is not a
        spec field or a value the spec refuses.
        """
        values: dict[str, Any] = {}
        metadata = {}
        for key, value in self.spec.items():
            if key.startswith("metadata."):
                metadata[key.removeprefix("metadata.")] = value
            elif key in _SPEC_FIELDS:
                values[key] = value  # InstanceSpec checks and converts the text (counts, paths)
            else:
                raise InvalidSpec(
                    f"no spec field {key!r}; the fields are {', '.join(_SPEC_FIELDS)} and metadata.KEY"
                )
        return InstanceSpec(name, metadata=metadata, **values)


def _import_class(path: str, module_name: str, attribute: str) -> object:
    """Return the object ``module_name:attribute`` names, or raise a ``DriverLoadError`` saying why not."""
    if not module_name or not attribute:
        raise DriverLoadError(path, None, "a driver class is named package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # whatever the module's own code raises while importing
        raise DriverLoadError(
            path, None, f"module {module_name!r} cannot be imported: {type(error).__name__}: {error}"
        ) from None
    try:
        return getattr(module, attribute)
    except Exception:  # AttributeError, or whatever a module's __getattr__ raises
        missing = f"module {module_name!r} has no attribute {attribute!r}"
        raise DriverLoadError(path, None, missing) from None


#: The fields of an InstanceSpec besides its name and metadata.
_SPEC_FIELDS = ("vcpus", "memory_mib", "kernel", "initrd", "cmdline", "disk_image")
