"""Plugins that import fine but are not usable drivers, each in its own way."""

from typing import Any, ClassVar

from pd_thirdparty import ThirdPartyDriver

from powerdrivers import Capability, Driver, InstanceReading


def not_a_driver() -> None:
    """Registered as a driver, but a function."""


class HalfDriver(ThirdPartyDriver):
    """Declares pause without implementing _pause/_unpause."""

    name = "halfdriver"
    capabilities: ClassVar[frozenset[Capability]] = ThirdPartyDriver.capabilities | {Capability.PAUSE}


class AbstractDriver(Driver):
    """Forgets the required primitives."""

    name = "abstractdriver"
    interface_version = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.START, Capability.POWER_OFF})

    def _read_one(self, ref: str) -> InstanceReading:
        raise NotImplementedError


class NoVersionDriver(ThirdPartyDriver):
    """Does not say which interface it was written for."""

    name = "noversion"
    interface_version = None  # type: ignore[assignment]


class ExplodingDriver(ThirdPartyDriver):
    """Fails with an untyped exception when constructed."""

    name = "explodes"

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        raise RuntimeError("socket exploded")
