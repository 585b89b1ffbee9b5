"""The libvirt driver."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import libvirt

from powerdrivers import (
    Capability,
    Driver,
    EventKind,
    HypervisorConnectionError,
    InstanceNotFound,
    InstanceReading,
    InstanceSpec,
    InstanceVcpuCounters,
    InvalidStateTransition,
    InvalidURI,
    Operation,
    PowerDriversError,
)
from powerdrivers_libvirt._connection import (
    Connection,
    Handle,
    credentials_callback,
    deregister_callbacks,
    weak_method,
)
from powerdrivers_libvirt._domains import bring_up, lost_race, remove, reset
from powerdrivers_libvirt._errors import CATEGORIES, code_name, translate
from powerdrivers_libvirt._eventloop import ensure_event_loop
from powerdrivers_libvirt._options import parse_options
from powerdrivers_libvirt._states import MANAGED_SAVE, MAYBE_SAVED_REASONS, NATIVE_STATES, native_names
from powerdrivers_libvirt._uri import check_uri, node_file, shown_uri

if TYPE_CHECKING:
    from powerdrivers_libvirt._listing import DomainLister

_LOG = logging.getLogger("powerdrivers.libvirt")
_T = TypeVar("_T")
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF
# Compiled by re on first use, not on import: loading the driver stays cheap.
_UUID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
#: Error categories that say nothing about the domain's state: no lost race behind them.
_NOT_RACES = frozenset({"connection", "authentication", "not_found"})


class LibvirtDriver(Driver):
    """Power management of libvirt domains: QEMU/KVM, Xen, LXC, or libvirt's test driver.

    Any libvirt URI works (``qemu:///system``, ``qemu+ssh://host/system``,
    ``test:///default``...); none means libvirt's default. Instances are
    domains, addressed by UUID or name.

    Options: ``username`` and ``password`` (for SASL or similar
    authentication; give the password through ``POWERDRIVERS_PASSWORD``,
    never in the URI), ``keepalive_interval`` (whole seconds, 1 to 3600, or
    -1 for none; default 5) and ``keepalive_count`` (1 to 100, default 5),
    ``reconnect_timeout`` (seconds the next call after a lost connection
    keeps trying, 0 to 3600, default 10), ``domain_type`` for ``spawn``
    (default ``test`` on the test driver, ``kvm`` where ``/dev/kvm`` is
    usable, else ``qemu``). It takes no ``poll_interval``: it never polls.

    Calls may run on any number of threads; closing the driver, or
    reconnecting, while calls are in flight lets them finish on the old
    connection, which closes when the last of them returns.
    """

    name: ClassVar[str] = "libvirt"
    interface_version: ClassVar[str] = "1.1"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    native_states = NATIVE_STATES

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        settings = parse_options(options)
        super().__init__(uri)
        if uri is not None:
            check_uri(uri)
        self._username = settings.username
        self._password = settings.password
        self._keepalive = (settings.keepalive_interval, settings.keepalive_count)
        self._domain_type = settings.domain_type
        self._lister_lock = threading.Lock()
        self._events_wanted = False
        self._lister: DomainLister | None = None
        ensure_event_loop()
        self._connection = Connection(
            self._open,
            settings.reconnect_timeout_s,
            self._reopened,
            lambda: self._closed,
            lambda: self._events_wanted,
        )

    def __repr__(self) -> str:
        return f"<LibvirtDriver {shown_uri(self.uri) if self.uri else '(default URI)'}>"

    # -- connection ---------------------------------------------------------

    def _open(self) -> libvirt.virConnect:
        shown = shown_uri(self.uri) if self.uri else "the default URI"
        try:
            if self._username is not None or self._password is not None:
                auth = [
                    [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE],
                    credentials_callback(self._username, self._password),
                    None,
                ]
                conn = libvirt.openAuth(self.uri, auth, 0)
            else:
                conn = libvirt.open(self.uri)
        except libvirt.libvirtError as error:
            node = node_file(self.uri)
            if node is not None:
                # libvirt's message quotes the file's first line: never pass it on.
                what = (
                    "is not a libvirt test-driver node XML file" if os.path.exists(node) else "does not exist"
                )
                raise InvalidURI(f"{node} {what}") from None
            raise _naming_uri(translate(error, driver=self.name, uri=self.uri), shown) from None
        try:
            conn.setKeepAlive(*self._keepalive)
        except libvirt.libvirtError:
            _LOG.debug("keepalive not supported on %s", shown)
        try:
            # QEMU reports a reset as REBOOT events; the test driver reports none.
            self.reports_resets = conn.getType() == "QEMU"
        except libvirt.libvirtError:
            _LOG.debug("cannot tell which hypervisor %s drives", shown)
        return conn

    def _reopened(self, handle: Handle) -> None:
        if self._events_wanted:
            self._register_callbacks(handle)
            self._publish_resync()

    def _call(
        self,
        work: Callable[[libvirt.virConnect], _T],
        *,
        instance: InstanceReading | None = None,
        operation: str | None = None,
    ) -> _T:
        self._check_open()
        connection = self._connection
        handle = connection.acquire()
        try:
            return work(handle.conn)
        except libvirt.libvirtError as error:
            translated = translate(
                error,
                driver=self.name,
                instance=instance.name if instance else None,
                operation=operation,
                state=instance.power_state.value if instance else None,
            )
            if isinstance(translated, HypervisorConnectionError):
                handle.broken = True
            raise translated from error
        finally:
            connection.release(handle)

    # -- reading --------------------------------------------------------------

    def _read_all(self) -> list[InstanceReading]:
        lister = self._lister
        if lister is None:
            with self._lister_lock:
                if self._lister is None:
                    # Only listing needs the bulk-listing machinery: loading the driver stays cheap.
                    from powerdrivers_libvirt._listing import DomainLister, bulk_module

                    self._lister = DomainLister(self._reading_of, bulk_module())
                lister = self._lister
        return self._call(lister.read_all)

    def _read_one(self, ref: str) -> InstanceReading:
        def work(conn: libvirt.virConnect) -> InstanceReading:
            domain = self._lookup(conn, ref)
            state, reason = domain.state()
            managed = (
                state == _SHUTOFF and reason in MAYBE_SAVED_REASONS and bool(domain.hasManagedSaveImage(0))
            )
            return self._reading(domain, state, reason, managed)

        return self._call(work)

    def _lookup(self, conn: libvirt.virConnect, ref: str) -> libvirt.virDomain:
        try:
            if _is_uuid(ref):
                try:
                    return conn.lookupByUUIDString(ref)
                except libvirt.libvirtError as error:
                    if code_name(error) != "VIR_ERR_NO_DOMAIN":
                        raise
            return conn.lookupByName(ref)
        except libvirt.libvirtError as error:
            if code_name(error) in ("VIR_ERR_NO_DOMAIN", "VIR_ERR_INVALID_ARG"):
                raise InstanceNotFound(ref) from None
            raise

    def _reading(
        self, domain: libvirt.virDomain, state: int, reason: int, managed_save: bool
    ) -> InstanceReading:
        return self._reading_of(state, reason, managed_save)._replace(
            id=domain.UUIDString(), name=domain.name()
        )

    def _reading_of(
        self, state: int, reason: int, managed_save: bool, observed_at: datetime | None = None
    ) -> InstanceReading:
        state_name, reason_name = native_names(state, reason)
        if managed_save:
            reason_name = MANAGED_SAVE
        return self.native_states.reading("", "", state_name, reason_name, observed_at=observed_at)

    # -- operations -------------------------------------------------------------

    def _on_domain(
        self, instance: InstanceReading, operation: str, action: Callable[[libvirt.virDomain], _T]
    ) -> _T | None:
        """Run ``action`` on the instance's domain; ``None`` if another client did the same first."""

        def work(conn: libvirt.virConnect) -> _T | None:
            domain = self._lookup(conn, instance.id)
            try:
                return action(domain)
            except libvirt.libvirtError as error:
                if CATEGORIES.get(code_name(error)) in _NOT_RACES:
                    raise
                own = self._tracker.own_operation(instance.id)
                try:
                    settled = lost_race(domain, instance, Operation(operation), self._reading_of, own)
                except InvalidStateTransition as refused:
                    raise refused from error
                if not settled:
                    raise
                return None

        return self._call(work, instance=instance, operation=operation)

    def _start(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "start", bring_up)

    def _power_off(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "power_off", lambda domain: domain.destroy())

    def _request_shutdown(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "shutdown", lambda domain: domain.shutdownFlags(0))

    def _request_reboot(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "reboot", lambda domain: domain.reboot(0))
        if self._is_test_driver():
            # libvirt's test driver reboots synchronously and sends no reboot
            # event; its reboot has happened when the call returns.
            self._publish(EventKind.REBOOTED, self._read_one(instance.id))

    def _hard_reboot(self, instance: InstanceReading) -> None:
        in_place = self._on_domain(instance, "hard_reboot", reset)
        if in_place is False and self.reports_resets:
            # Stopped and started instead: no REBOOT event comes, so the reset is reported here.
            self._publish(EventKind.REBOOTED, self._read_one(instance.id))

    def _pause(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "pause", lambda domain: domain.suspend())

    def _unpause(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "unpause", lambda domain: domain.resume())

    def _suspend(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "suspend", lambda domain: domain.managedSave(0))

    def _resume(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "resume", bring_up)

    def _spawn(self, spec: InstanceSpec) -> InstanceReading:
        from powerdrivers_libvirt._xml import domain_xml  # only spawning needs an XML library

        xml = domain_xml(spec, self._spawn_domain_type())

        def work(conn: libvirt.virConnect) -> str:
            domain = conn.defineXML(xml)
            try:
                domain.create()
            except libvirt.libvirtError:
                # Leave nothing half-made behind: the definition goes too.
                domain.undefine()
                raise
            return str(domain.UUIDString())

        return self._read_one(self._call(work, operation="spawn"))

    def _delete(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "delete", remove)

    def _vcpu_counters(self, instance: InstanceReading) -> InstanceVcpuCounters:
        # VCPU statistics are imported on first use: loading the driver stays cheap.
        from powerdrivers_libvirt._stats import instance_counters

        return self._call(
            lambda conn: instance_counters(conn, self._lookup(conn, instance.id)),
            instance=instance,
            operation="vcpu_stats",
        )

    def _all_vcpu_counters(self) -> list[InstanceVcpuCounters]:
        from powerdrivers_libvirt._stats import running_counters

        return self._call(running_counters, operation="vcpu_counters")

    # -- events ---------------------------------------------------------------------

    def _start_native_events(self) -> None:
        self._events_wanted = True
        self._connection.locked(self._register_callbacks)

    def _stop_native_events(self) -> None:
        self._events_wanted = False
        self._connection.if_open(deregister_callbacks)

    def _register_callbacks(self, handle: Handle) -> None:
        """Register the event callbacks on ``handle``'s connection, unless they are."""
        if handle.callbacks:
            return
        conn = handle.conn
        try:
            for event_id, method in (
                (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
                (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._rebooted),
            ):
                # libvirt keeps the callback until it is deregistered: it must not keep the driver.
                handle.callbacks.append(conn.domainEventRegisterAny(None, event_id, *weak_method(method)))
        except libvirt.libvirtError as error:
            deregister_callbacks(handle)
            raise translate(error, driver=self.name) from error

    def _lifecycle(self, domain: libvirt.virDomain, event: int, detail: int) -> None:
        from powerdrivers_libvirt._events import event_meaning  # only event delivery needs the table

        meaning = event_meaning(event, detail)
        if isinstance(meaning, str):
            _LOG.warning("libvirt: %s on %s; ignored", meaning, domain.name())
            return
        if meaning is None:
            return
        kind, state, reason = meaning
        if kind is EventKind.STOPPED and reason == "saved" and self._managed_save(domain):
            kind, reason = EventKind.SUSPENDED, MANAGED_SAVE
        self._publish(kind, self.native_states.reading(domain.UUIDString(), domain.name(), state, reason))

    def _managed_save(self, domain: libvirt.virDomain) -> bool:
        # Events can arrive after a later operation already restored the image,
        # so our own suspend in flight or just finished also says "managed save".
        if self._tracker.expects(domain.UUIDString(), EventKind.SUSPENDED) is Operation.SUSPEND:
            return True
        try:
            return bool(domain.hasManagedSaveImage(0))
        except libvirt.libvirtError:
            return False

    def _rebooted(self, domain: libvirt.virDomain) -> None:
        self._publish(
            EventKind.REBOOTED,
            self.native_states.reading(domain.UUIDString(), domain.name(), "running", "booted"),
        )

    # -- lifecycle --------------------------------------------------------------------

    def _close(self) -> None:
        with self._lister_lock:
            lister = self._lister
        if lister is not None:
            lister.close()
        # Calls still in flight finish on the connection; the last of them closes it.
        self._connection.close()

    def _is_test_driver(self) -> bool:
        return bool(self._call(lambda conn: conn.getType()) == "TEST")

    def _spawn_domain_type(self) -> str:
        if self._domain_type:
            return self._domain_type
        if self._is_test_driver():
            return "test"
        local = self.uri is None or ("://" in self.uri and self.uri.split("://", 1)[1].startswith("/"))
        return "kvm" if not local or os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"


def _is_uuid(ref: str) -> bool:
    return re.fullmatch(_UUID, ref) is not None


def _naming_uri(error: PowerDriversError, shown_uri: str) -> PowerDriversError:
    """Add the (redacted) URI to a connection error's message."""
    error.args = (f"{error} (connecting to {shown_uri})",)
    return error
