"""The libvirt driver."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
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
    InvalidOption,
    Operation,
    PowerDriversError,
    Secret,
    VcpuStats,
    redact_uri,
)
from powerdrivers_libvirt._errors import code_name, translate
from powerdrivers_libvirt._eventloop import ensure_event_loop
from powerdrivers_libvirt._states import MANAGED_SAVE, MAYBE_SAVED_REASONS, NATIVE_STATES, native_names
from powerdrivers_libvirt._uri import check_uri

if TYPE_CHECKING:
    from powerdrivers_libvirt._listing import DomainLister

_LOG = logging.getLogger("powerdrivers.libvirt")
_T = TypeVar("_T")
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF
# Compiled by re on first use, not on import: loading the driver stays cheap.
_UUID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
_OPTIONS = {
    "username", "password", "keepalive_interval", "keepalive_count", "reconnect_timeout", "domain_type",
    "poll_interval",
}  # fmt: skip


class LibvirtDriver(Driver):
    """Power management of libvirt domains: QEMU/KVM, Xen, LXC, or libvirt's test driver.

    Any libvirt URI works (``qemu:///system``, ``qemu+ssh://host/system``,
    ``test:///default``...); none means libvirt's default. Instances are
    domains, addressed by UUID or name.

    Options: ``username`` and ``password`` (for SASL or similar
    authentication; give the password through ``POWERDRIVERS_PASSWORD``),
    ``keepalive_interval`` and ``keepalive_count`` (default 5 and 5),
    ``reconnect_timeout`` (seconds the next call after a lost connection
    keeps trying, default 10), ``domain_type`` for ``spawn`` (default
    ``test`` on the test driver, ``kvm`` where ``/dev/kvm`` is usable, else
    ``qemu``).
    """

    name: ClassVar[str] = "libvirt"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    native_states = NATIVE_STATES

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._reject_unknown_options(self.name, options, _OPTIONS)
        super().__init__(uri)
        if uri is not None:
            check_uri(uri)
        self._username = str(options["username"]) if "username" in options else None
        password = options.get("password")
        self._password = (
            password if isinstance(password, Secret) or password is None else Secret(str(password))
        )
        self._keepalive = (_number(options, "keepalive_interval", 5), _number(options, "keepalive_count", 5))
        self._reconnect_timeout = _number(options, "reconnect_timeout", 10.0)
        self._domain_type = options.get("domain_type")
        self._lock = threading.RLock()
        self._conn: libvirt.virConnect | None = None
        self._broken = False
        self._callbacks: list[int] = []
        self._events_wanted = False
        self._lister: DomainLister | None = None
        ensure_event_loop()
        self._conn = self._open()

    def __repr__(self) -> str:
        return f"<LibvirtDriver {redact_uri(self.uri) if self.uri else '(default URI)'}>"

    # -- connection ---------------------------------------------------------

    def _open(self) -> libvirt.virConnect:
        shown = redact_uri(self.uri) if self.uri else "the default URI"
        try:
            if self._username is not None or self._password is not None:
                auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], self._credentials, None]
                conn = libvirt.openAuth(self.uri, auth, 0)
            else:
                conn = libvirt.open(self.uri)
        except libvirt.libvirtError as error:
            raise _naming_uri(translate(error, driver=self.name), shown) from None
        try:
            conn.setKeepAlive(*self._keepalive)
        except libvirt.libvirtError:
            _LOG.debug("keepalive not supported on %s", shown)
        try:
            conn.registerCloseCallback(self._connection_closed, None)
        except libvirt.libvirtError:
            _LOG.debug("close callback not supported on %s", shown)
        return conn

    def _credentials(self, credentials: list[list[Any]], _opaque: object) -> int:
        for credential in credentials:
            if credential[0] == libvirt.VIR_CRED_AUTHNAME:
                credential[4] = self._username or ""
            elif credential[0] == libvirt.VIR_CRED_PASSPHRASE:
                credential[4] = self._password.reveal() if self._password else ""
        return 0

    def _connection_closed(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        _LOG.warning("libvirt connection closed (reason %s); the next call reconnects", reason)
        self._broken = True

    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None and not self._broken:
                return self._conn
            self._reconnect()
            assert self._conn is not None
            return self._conn

    def _reconnect(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            with contextlib.suppress(libvirt.libvirtError):
                old.close()
        deadline = time.monotonic() + self._reconnect_timeout
        delay = 0.1
        while True:
            try:
                self._conn = self._open()
                break
            except HypervisorConnectionError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._broken = False
        self._callbacks = []
        if self._events_wanted:
            self._register_callbacks(self._conn)
            self._publish_resync()

    def _call(
        self,
        work: Callable[[libvirt.virConnect], _T],
        *,
        instance: InstanceReading | None = None,
        operation: str | None = None,
    ) -> _T:
        self._check_open()
        conn = self._connection()
        try:
            return work(conn)
        except libvirt.libvirtError as error:
            translated = translate(
                error,
                driver=self.name,
                instance=instance.name if instance else None,
                operation=operation,
                state=instance.power_state.value if instance else None,
            )
            if isinstance(translated, HypervisorConnectionError):
                self._broken = True
            raise translated from error

    # -- reading --------------------------------------------------------------

    def _read_all(self) -> list[InstanceReading]:
        lister = self._lister
        if lister is None:
            with self._lock:
                if self._lister is None:
                    # Only listing needs the bulk-listing machinery: loading the driver stays cheap.
                    from powerdrivers_libvirt._listing import DomainLister, bulk_module, c_functions

                    self._lister = DomainLister(self._reading_of, c_functions(), bulk_module())
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
        self, instance: InstanceReading, operation: str, action: Callable[[libvirt.virDomain], object]
    ) -> None:
        self._call(
            lambda conn: action(self._lookup(conn, instance.id)), instance=instance, operation=operation
        )

    def _start(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "start", _bring_up)

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
        def reset(domain: libvirt.virDomain) -> None:
            if domain.state()[0] == libvirt.VIR_DOMAIN_CRASHED:
                # A crashed domain is kept for inspection; a reset cannot revive it.
                _power_cycle(domain)
                return
            try:
                domain.reset(0)
            except libvirt.libvirtError as error:
                if code_name(error) not in ("VIR_ERR_NO_SUPPORT", "VIR_ERR_OPERATION_UNSUPPORTED"):
                    raise
                _power_cycle(domain)
            # A reset keeps a paused domain paused; the table promises it running.
            if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                domain.resume()

        self._on_domain(instance, "hard_reboot", reset)
        # A reset is invisible to lifecycle events; say that it happened.
        self._publish(EventKind.REBOOTED, self._read_one(instance.id))

    def _pause(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "pause", lambda domain: domain.suspend())

    def _unpause(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "unpause", lambda domain: domain.resume())

    def _suspend(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "suspend", lambda domain: domain.managedSave(0))

    def _resume(self, instance: InstanceReading) -> None:
        self._on_domain(instance, "resume", _bring_up)

    def _spawn(self, spec: InstanceSpec) -> InstanceReading:
        from powerdrivers_libvirt._xml import domain_xml  # only spawning needs an XML library

        xml = domain_xml(spec, self._spawn_domain_type())

        def work(conn: libvirt.virConnect) -> libvirt.virDomain:
            domain = conn.defineXML(xml)
            try:
                domain.create()
            except libvirt.libvirtError:
                # Leave nothing half-made behind: the definition goes too.
                domain.undefine()
                raise
            return domain

        domain = self._call(work, operation="spawn")
        return self._read_one(domain.UUIDString())

    def _delete(self, instance: InstanceReading) -> None:
        def work(domain: libvirt.virDomain) -> None:
            if domain.isActive():
                domain.destroy()
            if not domain.isPersistent():
                return
            flags = (
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            )
            try:
                domain.undefineFlags(flags)
            except libvirt.libvirtError as error:
                if code_name(error) not in ("VIR_ERR_NO_SUPPORT", "VIR_ERR_INVALID_ARG"):
                    raise
                if domain.hasManagedSaveImage(0):
                    domain.managedSaveRemove(0)
                domain.undefine()

        self._on_domain(instance, "delete", work)

    def _vcpu_stats(self, instance: InstanceReading, window_s: float) -> Sequence[VcpuStats]:
        first = self._vcpu_sample(instance)
        began = time.monotonic()
        time.sleep(window_s)
        second = self._vcpu_sample(instance)
        elapsed_ns = (time.monotonic() - began) * 1e9
        stats = []
        for vcpu in sorted(second):
            running_ns, waiting_ns = (second[vcpu][i] - first.get(vcpu, second[vcpu])[i] for i in (0, 1))
            running = min(max(running_ns / elapsed_ns, 0.0), 1.0)
            waiting = min(max(waiting_ns / elapsed_ns, 0.0), 1.0 - running)
            stats.append(VcpuStats(vcpu, running, 1.0 - running - waiting, waiting, window_s))
        return stats

    def _vcpu_sample(self, instance: InstanceReading) -> dict[int, tuple[int, int]]:
        """Per VCPU, (nanoseconds running, nanoseconds waiting for a physical CPU) so far."""

        def work(conn: libvirt.virConnect) -> dict[int, tuple[int, int]]:
            domain = self._lookup(conn, instance.id)
            records = conn.domainListGetStats([domain], libvirt.VIR_DOMAIN_STATS_VCPU)
            stats = records[0][1] if records else {}
            count = int(stats.get("vcpu.current", 0))
            if count and f"vcpu.{count - 1}.time" in stats:
                return {
                    n: (int(stats[f"vcpu.{n}.time"]), int(stats.get(f"vcpu.{n}.wait", 0)))
                    for n in range(count)
                }
            # Drivers without bulk VCPU statistics (the test driver) still answer virDomainGetVcpus.
            infos = domain.vcpus()[0]
            return {int(info[0]): (int(info[2]), 0) for info in infos}

        return self._call(work, instance=instance, operation="vcpu_stats")

    # -- events ---------------------------------------------------------------------

    def _start_native_events(self) -> None:
        with self._lock:
            self._events_wanted = True
            self._register_callbacks(self._connection())

    def _stop_native_events(self) -> None:
        with self._lock:
            self._events_wanted = False
            conn, callbacks, self._callbacks = self._conn, self._callbacks, []
            if conn is None or self._broken:
                return
            for callback in callbacks:
                try:
                    conn.domainEventDeregisterAny(callback)
                except libvirt.libvirtError:
                    _LOG.debug("could not deregister event callback %s", callback)

    def _register_callbacks(self, conn: libvirt.virConnect) -> None:
        try:
            self._callbacks = [
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
                ),
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._rebooted, None),
            ]
        except libvirt.libvirtError as error:
            raise translate(error, driver=self.name) from error

    def _lifecycle(
        self, _conn: libvirt.virConnect, domain: libvirt.virDomain, event: int, detail: int, _: object
    ) -> None:
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

    def _rebooted(self, _conn: libvirt.virConnect, domain: libvirt.virDomain, _: object) -> None:
        self._publish(
            EventKind.REBOOTED,
            self.native_states.reading(domain.UUIDString(), domain.name(), "running", "booted"),
        )

    # -- lifecycle --------------------------------------------------------------------

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            lister = self._lister
        if lister is not None:
            lister.close()
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.unregisterCloseCallback()
            try:
                conn.close()
            except libvirt.libvirtError:
                _LOG.debug("closing the libvirt connection failed", exc_info=True)

    def _is_test_driver(self) -> bool:
        return bool(self._call(lambda conn: conn.getType()) == "TEST")

    def _spawn_domain_type(self) -> str:
        if self._domain_type:
            return str(self._domain_type)
        if self._is_test_driver():
            return "test"
        local = self.uri is None or ("://" in self.uri and self.uri.split("://", 1)[1].startswith("/"))
        return "kvm" if not local or os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"


def _bring_up(domain: libvirt.virDomain) -> None:
    """Run a domain that is off, crashed, suspended by managed save or by the guest."""
    state = domain.state()[0]
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        domain.pMWakeup(0)
    elif state == libvirt.VIR_DOMAIN_CRASHED:
        _power_cycle(domain)
    else:
        # create() also restores a managed-save image, which is how SUSPENDED starts.
        domain.create()


def _power_cycle(domain: libvirt.virDomain) -> None:
    if domain.isActive():
        domain.destroy()
    domain.create()


def _number(options: dict[str, Any], key: str, default: float) -> Any:
    value = options.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidOption(f"libvirt option {key} must be a number, not {value!r}") from None
    if number < 0:
        raise InvalidOption(f"libvirt option {key} must not be negative")
    return int(number) if isinstance(default, int) else number


def _is_uuid(ref: str) -> bool:
    return re.fullmatch(_UUID, ref) is not None


def _naming_uri(error: PowerDriversError, shown_uri: str) -> PowerDriversError:
    """Add the (redacted) URI to a connection error's message."""
    error.args = (f"{error} (connecting to {shown_uri})",)
    return error
