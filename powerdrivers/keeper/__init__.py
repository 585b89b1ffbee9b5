"""The power keeper: desired power state, power sync and durable history, for any driver.

An optional extra (``pip install 'powerdrivers[keeper]'``): ``import powerdrivers`` never
imports this package, and importing this package does not import the database libraries
either: the SQL store's names load on first use, so the CLI's help and the keeper's values
cost nothing.
"""

from typing import TYPE_CHECKING, Any

from powerdrivers.keeper._errors import (
    ActionInFlight,
    HostAlreadyKept,
    InvalidStoreURL,
    KeeperError,
    StoreError,
    StoreUnavailable,
    UnknownAction,
    UnknownInstance,
)
from powerdrivers.keeper._keeper import Keeper
from powerdrivers.keeper._model import (
    Action,
    ActionStatus,
    Cause,
    HistoryRecord,
    HostView,
    InstanceView,
    Policy,
    RecordKind,
    VcpuSample,
)
from powerdrivers.keeper._paths import default_store_url
from powerdrivers.keeper._settings import KeeperSettings
from powerdrivers.keeper._store_api import HostClaim, KeeperStore

if TYPE_CHECKING:
    from powerdrivers.keeper._store import SqlStore, open_store

__all__ = [
    "Action",
    "ActionInFlight",
    "ActionStatus",
    "Cause",
    "HistoryRecord",
    "HostAlreadyKept",
    "HostClaim",
    "HostView",
    "InstanceView",
    "InvalidStoreURL",
    "Keeper",
    "KeeperError",
    "KeeperSettings",
    "KeeperStore",
    "Policy",
    "RecordKind",
    "SqlStore",
    "StoreError",
    "StoreUnavailable",
    "UnknownAction",
    "UnknownInstance",
    "VcpuSample",
    "default_store_url",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # The SQL store imports SQLAlchemy: only when someone asks for it.
    if name in ("SqlStore", "open_store"):
        from powerdrivers.keeper import _store

        return getattr(_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
