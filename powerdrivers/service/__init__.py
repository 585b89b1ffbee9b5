"""The reference compute service: a fleet of hosts kept by the power keeper, with an API and a dashboard.

An optional extra (``pip install 'powerdrivers[service]'``): ``import powerdrivers`` never
imports this package, and importing this package imports nothing of its own: its names (the
config, the event bus, the fleet) load on first use, so ``powerdrivers --help``, which
registers the ``serve`` verb from here, stays quick with or without the extra installed.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from powerdrivers.service._bus import (
        EventBus,
        EventSubscription,
        ServiceEvent,
        SubscriptionClosed,
        SubscriptionError,
        SubscriptionOverflow,
    )
    from powerdrivers.service._config import (
        ConfigFileError,
        HostConfig,
        Role,
        ServiceConfig,
        TokenConfig,
        load_config,
    )
    from powerdrivers.service._fleet import Fleet

_MODULES = {
    "EventBus": "_bus",
    "EventSubscription": "_bus",
    "ServiceEvent": "_bus",
    "SubscriptionClosed": "_bus",
    "SubscriptionError": "_bus",
    "SubscriptionOverflow": "_bus",
    "ConfigFileError": "_config",
    "HostConfig": "_config",
    "Role": "_config",
    "ServiceConfig": "_config",
    "TokenConfig": "_config",
    "load_config": "_config",
    "Fleet": "_fleet",
}

__all__ = [
    "ConfigFileError",
    "EventBus",
    "EventSubscription",
    "Fleet",
    "HostConfig",
    "Role",
    "ServiceConfig",
    "ServiceEvent",
    "SubscriptionClosed",
    "SubscriptionError",
    "SubscriptionOverflow",
    "TokenConfig",
    "load_config",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"powerdrivers.service.{module}"), name)
