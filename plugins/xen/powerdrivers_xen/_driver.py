"""The Xen driver, over the official XenAPI SDK."""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from powerdrivers import (
    Capability,
    ConfigurationError,
    Driver,
    EventKind,
    HypervisorConnectionError,
    HypervisorError,
    InstanceNotFound,
    InstanceReading,
    InstanceVcpuCounters,
    Operation,
    OperationTimeout,
    PowerDriversError,
    PowerState,
    VcpuStats,
    redact_uri,
)
from powerdrivers_xen._options import OPTIONS, parse_settings
from powerdrivers_xen._rrd_updates import RrdUpdatesReader
from powerdrivers_xen._session import XapiSession
from powerdrivers_xen._states import NATIVE_STATES, POWER_OPERATIONS, in_flight
from powerdrivers_xen._stats import XenVcpuStatistics

_LOG = logging.getLogger("powerdrivers.xen")
_T = TypeVar("_T")
#: The longest pause between two attempts to reach xapi again while following a reboot.
_MAX_RETRY_DELAY_S = 1.0


class XenDriver(Driver):
    """Power management of Xen VMs through xapi (XenServer, XCP-ng), with the official XenAPI SDK.

    URI: ``https://host[:port]`` (``http://`` works, with a warning: the
    password would cross the network in clear; credentials in the URI are
    refused). Options: ``username`` (default ``root``); the password from
    ``POWERDRIVERS_PASSWORD``, the ``password`` option or a
    ``password_file``; ``verify_tls`` (default true; ``false`` is an
    explicit opt-out); ``timeout``, the bound of every call as a whole
    (default 30 s, at most 3600); ``event_timeout``, the long-poll of the
    event thread (default 2 s, at most 60); ``poll_interval``, the pace of
    following a soft reboot's task (default 0.05 s, at most 60). Instances
    are VMs, addressed by uuid or name_label; templates, snapshots and the
    control domain are not instances.
    """

    name: ClassVar[str] = "xen"
    interface_version: ClassVar[str] = "1.1"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.START,
            Capability.POWER_OFF,
            Capability.SHUTDOWN,
            Capability.REBOOT,
            Capability.HARD_REBOOT,
            Capability.PAUSE,
            Capability.SUSPEND,
            Capability.VCPU_STATS,
            Capability.NATIVE_EVENTS,
        }
    )
    native_states = NATIVE_STATES

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._reject_unknown_options(self.name, options, OPTIONS)
        self._settings = settings = parse_settings(uri, options)
        super().__init__(uri, poll_interval_s=settings.poll_interval_s)
        self._url = settings.url
        self._timeout_s = settings.timeout_s
        self._event_timeout_s = settings.event_timeout_s
        if not settings.verify_tls:
            _LOG.warning("TLS certificate verification is off for %s", self._url)
        self._xapi = self._login()
        self._clean_tasks: dict[str, str] = {}
        self._stop_events = threading.Event()
        self._event_thread: threading.Thread | None = None
        #: Event sessions no longer used that xapi could not be reached to end; ended later.
        self._stale_sessions: list[XapiSession] = []
        self._stale_lock = threading.Lock()
        self._watchers: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"<XenDriver {redact_uri(self._url)} user={self._settings.username!r}>"

    def _login(self, timeout_s: float | None = None) -> XapiSession:
        return XapiSession(self._settings, timeout_s)

    # -- reading ------------------------------------------------------------------

    def _read_all(self) -> list[InstanceReading]:
        records: object = self._xapi.call(lambda api: api.VM.get_all_records())
        if not isinstance(records, Mapping):
            raise _malformed("VM.get_all_records")
        return [_reading(record) for record in records.values() if _is_instance(record)]

    def _read_one(self, ref: str) -> InstanceReading:
        return _reading(self._vm(ref)[1])

    def _vm(self, ref: str) -> tuple[str, Mapping[str, Any]]:
        """Return (opaque ref, record) of the instance with uuid or name_label ``ref``."""
        if _is_uuid(ref):
            try:
                vm = self._xapi.call(lambda api: api.VM.get_by_uuid(ref), instance=ref)
                record = self._xapi.call(lambda api: api.VM.get_record(vm), instance=ref)
            except InstanceNotFound:
                pass
            else:
                if not _is_instance(record):
                    raise InstanceNotFound(ref)
                return vm, record
        refs: list[str] = self._xapi.call(lambda api: api.VM.get_by_name_label(ref), instance=ref)
        found = []
        for vm in refs:
            record = self._xapi.call(_record_of(vm), instance=ref)
            if _is_instance(record):
                found.append((vm, record))
        if not found:
            raise InstanceNotFound(ref)
        if len(found) > 1:
            raise ConfigurationError(f"{len(found)} VMs are named {ref!r}; address one by its uuid")
        return found[0]

    # -- operations -----------------------------------------------------------------

    def _on_vm(self, instance: InstanceReading, operation: str, work: Callable[[Any, str], _T]) -> _T:
        vm, _ = self._vm(instance.id)
        return self._xapi.call(lambda api: work(api, vm), instance=instance.name, operation=operation)

    def _start(self, instance: InstanceReading) -> None:
        def start(api: Any, vm: str) -> None:
            state = api.VM.get_power_state(vm)
            if state == "Suspended":
                api.VM.resume(vm, False, False)
                return
            if state == "Crashed":
                api.VM.hard_shutdown(vm)
            api.VM.start(vm, False, False)

        self._on_vm(instance, "start", start)

    def _power_off(self, instance: InstanceReading) -> None:
        # hard_shutdown also cancels a clean shutdown still waiting on the guest.
        self._on_vm(instance, "power_off", lambda api, vm: api.VM.hard_shutdown(vm))
        self._clean_tasks.pop(instance.id, None)

    def _request_shutdown(self, instance: InstanceReading) -> None:
        pending = self._clean_tasks.get(instance.id)
        if pending is not None:
            if self._still_pending(pending):
                return  # xapi is still waiting on the guest; a second request would be refused
            self._clean_tasks.pop(instance.id, None)
        task = self._on_vm(instance, "shutdown", lambda api, vm: api.Async.VM.clean_shutdown(vm))
        self._clean_tasks[instance.id] = task

    def _still_pending(self, task: str) -> bool:
        """Whether an earlier clean shutdown's task is still waiting on the guest.

        A task xapi no longer knows (it restarted, or collected finished tasks) or cannot
        describe is no pending task. Losing xapi itself is raised: nothing is known then.
        """
        try:
            return self._task_status(task) == "pending"
        except (HypervisorConnectionError, OperationTimeout):
            raise
        except PowerDriversError as error:
            _LOG.debug("xen: the earlier clean shutdown task is gone (%s); asking again", error)
            return False

    def _request_reboot(self, instance: InstanceReading) -> None:
        task = self._on_vm(instance, "reboot", lambda api, vm: api.Async.VM.clean_reboot(vm))
        watcher = threading.Thread(
            target=self._await_reboot, args=(instance.id, task), name="powerdrivers-xen-reboot", daemon=True
        )
        self._watchers = [thread for thread in self._watchers if thread.is_alive()] + [watcher]
        watcher.start()

    def _await_reboot(self, instance_id: str, task: str) -> None:
        """Publish REBOOTED when xapi reports the clean reboot done (xapi itself bounds the wait).

        A failure to reach xapi (a restart, a stall, a dropped connection) says nothing about
        the reboot: it is retried for as long as the core waits for this reboot, so that a
        reboot xapi completed is reported graceful rather than forced at the timeout.
        """
        poll_s = self._settings.poll_interval_s
        delay = poll_s
        failures = 0
        while not self._stop_events.wait(delay) and self._tracker.in_flight(instance_id) is Operation.REBOOT:
            try:
                status = self._task_status(task)
                if status == "pending":
                    delay = poll_s
                    continue
                if status == "success":
                    self._publish(EventKind.REBOOTED, self._read_one(instance_id))
            except (HypervisorConnectionError, OperationTimeout) as error:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                _LOG.log(
                    level, "xen: lost xapi while following the reboot of %s: %s; retrying", instance_id, error
                )
                delay = min(delay * 2, max(poll_s, _MAX_RETRY_DELAY_S))
                continue
            except PowerDriversError as error:
                _LOG.warning("xen: could not follow the reboot of %s: %s", instance_id, error)
            return

    def _task_status(self, task: str) -> str:
        return str(self._xapi.call(lambda api: api.task.get_status(task)))

    def _hard_reboot(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "hard_reboot", lambda api, vm: api.VM.hard_reboot(vm))

    def _pause(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "pause", lambda api, vm: api.VM.pause(vm))

    def _unpause(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "unpause", lambda api, vm: api.VM.unpause(vm))

    def _suspend(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "suspend", lambda api, vm: api.VM.suspend(vm))

    def _resume(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "resume", lambda api, vm: api.VM.resume(vm, False, False))

    def _vcpu_stats(self, instance: InstanceReading, window_s: float) -> Sequence[VcpuStats]:
        # xapi's RRD rows are its resolution: the statistics are those of the rows that
        # ended within the window just waited (at least the newest one).
        time.sleep(window_s)
        return self._statistics.window(instance, window_s)

    def _vcpu_counters(self, instance: InstanceReading) -> InstanceVcpuCounters:
        return self._statistics.counters(instance)

    def _all_vcpu_counters(self) -> Iterable[InstanceVcpuCounters]:
        running = [reading for reading in self._read_all() if reading.power_state is PowerState.RUNNING]
        return self._statistics.all_counters(running)

    @functools.cached_property
    def _statistics(self) -> XenVcpuStatistics:
        return XenVcpuStatistics(RrdUpdatesReader(self._settings, self._xapi), self._xapi)

    # -- events -------------------------------------------------------------------------

    def _start_native_events(self) -> None:
        baseline, token, source = self._event_baseline()
        self._stop_events.clear()
        self._event_thread = threading.Thread(
            target=self._event_loop,
            args=(source, token, baseline),
            name="powerdrivers-xen-events",
            daemon=True,
        )
        self._event_thread.start()

    def _stop_native_events(self) -> None:
        self._stop_events.set()
        thread, self._event_thread = self._event_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._event_timeout_s + self._timeout_s + 1)

    def _event_baseline(self) -> tuple[dict[str, InstanceReading], str, XapiSession]:
        """Log in a session for events and read where things stand (an empty token lists everything).

        Raises only powerdrivers errors, whatever xapi answers; the session is ended on failure.
        """
        # The long poll may take event_timeout by design; only beyond that is the server silent.
        source = self._login(self._event_timeout_s + min(self._timeout_s, 5.0))
        try:
            batch = source.call(_events_since("", 0.0))
            token, events = _event_batch(batch)
            baseline: dict[str, InstanceReading] = {}
            for event in events:
                ref, after = _event_change(event)
                if after is not None:
                    baseline[ref] = after
        except PowerDriversError:
            self._end_sessions(source)
            raise
        return baseline, token, source

    def _end_sessions(self, *sessions: XapiSession) -> None:
        """Log out event sessions no longer used, and those xapi could not be reached to end before.

        A session whose logout did not reach xapi (a stall, a restart) may live on there: it is
        kept and tried again the next time, so interruptions do not leak sessions.
        """
        with self._stale_lock:
            ending, self._stale_sessions = [*self._stale_sessions, *sessions], []
        kept = [session for session in ending if not session.logout()]
        with self._stale_lock:
            self._stale_sessions.extend(kept)

    def _event_loop(self, source: XapiSession, token: str, known: dict[str, InstanceReading]) -> None:
        """Follow ``event.from`` until stopped; any failure is an interruption, never the end.

        An interrupted session is ended (or kept to end later), then a new session reads the
        baseline again and listeners get a ``resync``.
        """
        delay = 0.1
        current: XapiSession | None = source
        handle = source.handle
        while not self._stop_events.is_set():
            if current is None:
                if self._stop_events.wait(delay):
                    break
                delay = min(delay * 2, 5.0)
                self._end_sessions()
                try:
                    known, token, current = self._event_baseline()
                except PowerDriversError as error:
                    _LOG.debug("xen event stream: reconnecting failed: %s", error)
                    continue
                delay = 0.1
                handle = current.handle
                self._publish_resync()
                continue
            try:
                batch = current.call(_events_since(token, self._event_timeout_s))
                token, events = _event_batch(batch)
                for event in events:
                    self._dispatch(event, known)
            except PowerDriversError as error:
                _LOG.warning("xen event stream interrupted: %s; reconnecting", error)
                self._end_sessions(current)
                current = None
                continue
            if current.handle != handle:
                # The SDK logged in again: xapi restarted or dropped the session, so
                # changes may have gone unseen. Start from what is true now.
                _LOG.warning("xen event session was re-established; resynchronising")
                self._end_sessions(current)
                current = None
                continue
            if self._stale_sessions:
                self._end_sessions()
        self._end_sessions(*([] if current is None else [current]))

    def _dispatch(self, event: Mapping[str, Any], known: dict[str, InstanceReading]) -> None:
        """Note the change ``event`` reports in ``known`` (readings by VM ref) and publish it."""
        ref, after = _event_change(event)
        before = known.get(ref)
        if after is None:
            known.pop(ref, None)
        else:
            known[ref] = after
        self._publish_change(before, after)

    # -- lifecycle -------------------------------------------------------------------------

    def _close(self) -> None:
        self._stop_events.set()
        self._xapi.logout()


def _record_of(vm: str) -> Callable[[Any], Mapping[str, Any]]:
    return lambda api: api.VM.get_record(vm)


def _events_since(token: str, timeout_s: float) -> Callable[[Any], Mapping[str, Any]]:
    # "from" is a Python keyword, hence getattr.
    return lambda api: getattr(api.event, "from")(["vm"], token, timeout_s)


def _event_batch(batch: object) -> tuple[str, list[Mapping[str, Any]]]:
    """Return the token and the events of an ``event.from`` answer, checking their shape."""
    if not isinstance(batch, Mapping):
        raise _malformed("event.from")
    token, events = batch.get("token"), batch.get("events")
    if not isinstance(token, str) or not isinstance(events, (list, tuple)):
        raise _malformed("event.from")
    if not all(isinstance(event, Mapping) for event in events):
        raise _malformed("event.from")
    return token, list(events)


def _event_change(event: Mapping[str, Any]) -> tuple[str, InstanceReading | None]:
    """Return the VM reference an event is about and its reading after it (None: gone, or no instance)."""
    ref, operation = event.get("ref"), event.get("operation")
    if not isinstance(ref, str) or not isinstance(operation, str):
        raise _malformed("event.from")
    if operation == "del":
        return ref, None
    snapshot = event.get("snapshot")
    if not isinstance(snapshot, Mapping):
        raise _malformed("event.from")
    return ref, _reading(snapshot) if _is_instance(snapshot) else None


def _reading(record: Mapping[str, Any]) -> InstanceReading:
    if not all(isinstance(record.get(field), str) for field in ("uuid", "name_label", "power_state")):
        raise _malformed("a VM record")
    operations = record.get("current_operations") or {}
    if not isinstance(operations, Mapping) or not all(isinstance(op, str) for op in operations.values()):
        raise _malformed("a VM record")
    operation = in_flight(operations)
    return NATIVE_STATES.reading(
        str(record["uuid"]),
        str(record["name_label"]),
        str(record["power_state"]),
        operation,
        transition=POWER_OPERATIONS.get(operation or ""),
    )


def _malformed(what: str) -> HypervisorError:
    return HypervisorError(f"xapi sent a malformed answer to {what}", code="MALFORMED_ANSWER")


def _is_instance(record: object) -> bool:
    if not isinstance(record, Mapping):
        raise _malformed("a VM record")
    return bool(record) and not (
        record.get("is_a_template") or record.get("is_a_snapshot") or record.get("is_control_domain")
    )


def _is_uuid(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True
