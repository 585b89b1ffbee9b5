"""The feed: turns what the store records (by any process) into the service's live events.

One thread per service process. Woken by the store's change listener (on PostgreSQL, by any
process's commit, through ``LISTEN/NOTIFY``) or once a second, it reads the history records
after the last one it published and the instances changed since its cursor, then publishes
``record`` events, then each affected instance's new view, then any host whose view changed.
It always re-reads the store: a wake-up carries no data, so none can be lost or stale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from powerdrivers import InstanceNotFound
from powerdrivers.keeper._errors import StoreError
from powerdrivers.keeper._model import HostView
from powerdrivers.keeper._store_api import KeeperStore
from powerdrivers.service._bus import EventBus, ServiceEvent

_LOG = logging.getLogger("powerdrivers.service")

#: Seconds between looks at the store when no change listener call came.
FEED_INTERVAL: Final = 1.0
#: Records read per query; a bigger backlog is read in several.
_BATCH: Final = 500


class Feed:
    """Publishes the store's new records, changed instances and changed hosts on ``bus``."""

    def __init__(self, store: KeeperStore, bus: EventBus, interval: float = FEED_INTERVAL) -> None:
        self._store = store
        self._bus = bus
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._last_record: int | None = None
        self._cursor: int | None = None
        self._hosts: dict[str, HostView] = {}

    def start(self) -> None:
        """Start publishing from what the store holds now; the thread keeps trying if it is down."""
        self._remove_listener = self._store.add_change_listener(self._wake.set)
        self._thread = threading.Thread(target=self._run, name="service-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and join it. Idempotent."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    def wake(self) -> None:
        """Look at the store now (this process wrote something)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll()
            except (StoreError, InstanceNotFound) as error:
                _LOG.debug("service feed: reading the store failed: %s", error)
            self._wake.wait(self._interval)
            self._wake.clear()

    def poll(self) -> None:
        """Publish everything new since the last call (the first call only takes its bearings).

        Raises ``StoreError`` (then the next call carries on from where this one stopped).
        """
        if self._last_record is None or self._cursor is None:
            self._cursor, _ = self._store.changes_since(0)
            self._last_record = self._store.last_record_id()
            self._hosts = {host.name: host for host in self._store.hosts()}
            return
        affected: dict[str, None] = {}
        while True:
            records = self._store.records_after(self._last_record, _BATCH)
            for record in records:
                self._bus.publish(ServiceEvent(record.id, "record", record.to_dict()))
                self._last_record = record.id
                affected[record.instance_id] = None
            if len(records) < _BATCH:
                break
        self._cursor, changed = self._store.changes_since(self._cursor)
        affected.update(dict.fromkeys(changed))
        for instance_id in affected:
            try:
                view = self._store.instance(instance_id)
            except InstanceNotFound:
                continue  # vanished: its record said so
            self._bus.publish(ServiceEvent(None, "instance", view.to_dict()))
        for host in self._store.hosts():
            if self._hosts.get(host.name) != host:
                self._hosts[host.name] = host
                self._bus.publish(ServiceEvent(None, "host", host.to_dict()))
