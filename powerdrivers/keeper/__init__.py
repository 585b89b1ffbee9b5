"""The power keeper: desired power state, power sync and durable history, for any driver.

An optional extra (``pip install 'powerdrivers[keeper]'``): ``import powerdrivers`` never
imports this package or its database libraries.
"""

from powerdrivers.keeper._errors import (
    ActionInFlight,
    KeeperError,
    StoreError,
    StoreUnavailable,
    UnknownInstance,
)
from powerdrivers.keeper._model import (
    Action,
    ActionStatus,
    Cause,
    HistoryRecord,
    HostView,
    InstanceView,
    Policy,
    RecordKind,
)
from powerdrivers.keeper._paths import default_store_url
from powerdrivers.keeper._store import SqlStore, open_store
from powerdrivers.keeper._store_api import KeeperStore

__all__ = [
    "Action",
    "ActionInFlight",
    "ActionStatus",
    "Cause",
    "HistoryRecord",
    "HostView",
    "InstanceView",
    "KeeperError",
    "KeeperStore",
    "Policy",
    "RecordKind",
    "SqlStore",
    "StoreError",
    "StoreUnavailable",
    "UnknownInstance",
    "default_store_url",
    "open_store",
]
