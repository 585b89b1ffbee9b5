"""The Xen driver, over the official XenAPI SDK."""

from __future__ import annotations

import logging
import threading
import time
import uuid
import xmlrpc.client
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import XenAPI

from powerdrivers import (
    Capability,
    ConfigurationError,
    Driver,
    EventKind,
    InstanceNotFound,
    InstanceReading,
    InvalidOption,
    InvalidURI,
    PowerDriversError,
    Secret,
    VcpuStats,
    redact_uri,
)
from powerdrivers._changes import change_kind
from powerdrivers_xen._errors import translate_failure, translate_transport
from powerdrivers_xen._states import NATIVE_STATES, POWER_OPERATIONS, in_flight
from powerdrivers_xen._transport import transport_for

_LOG = logging.getLogger("powerdrivers.xen")
_T = TypeVar("_T")
_OPTIONS = {
    "username",
    "password",
    "password_file",
    "verify_tls",
    "timeout",
    "event_timeout",
    "poll_interval",
}
_ORIGINATOR = "powerdrivers"


class _Xapi:
    """One logged-in XenAPI session; the SDK's sessions are not thread-safe, so calls take turns."""

    def __init__(self, url: str, username: str, password: Secret, timeout_s: float, verify: bool) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._session = XenAPI.Session(url, transport=transport_for(url, timeout_s, verify))
        # The SDK logs in again by itself, once per expired session, with these credentials.
        self.call(lambda api: api.login_with_password(username, password.reveal(), "2.0", _ORIGINATOR))

    def call(
        self, work: Callable[[Any], _T], *, instance: str | None = None, operation: str | None = None
    ) -> _T:
        """Run ``work(session.xenapi)``; raise only powerdrivers errors."""
        with self._lock:
            try:
                return work(self._session.xenapi)
            except XenAPI.Failure as failure:
                raise translate_failure(failure, instance=instance, operation=operation) from None
            except PowerDriversError:
                raise
            except (OSError, xmlrpc.client.Error, ValueError) as error:
                raise translate_transport(error, self.url) from None

    @property
    def handle(self) -> str:
        """The session reference; it changes when the SDK had to log in again."""
        return str(self._session.handle)

    def logout(self) -> None:
        """End the session; errors are only logged, since there is nothing left to do about them."""
        try:
            self.call(lambda api: api.session.logout())
        except PowerDriversError as error:
            _LOG.debug("xapi logout failed: %s", error)


class XenDriver(Driver):
    """Power management of Xen VMs through xapi (XenServer, XCP-ng), with the official XenAPI SDK.

    URI: ``https://host[:port]`` (``http://`` works, with a warning: the
    password would cross the network in clear). Options: ``username``
    (default ``root``); the password from ``POWERDRIVERS_PASSWORD``, the
    ``password`` option or a ``password_file``; ``verify_tls`` (default
    true; ``false`` is an explicit opt-out); ``timeout`` for every call
    (default 30 s); ``event_timeout``, the long-poll of the event thread
    (default 2 s). Instances are VMs, addressed by uuid or name_label;
    templates, snapshots and the control domain are not instances.
    """

    name: ClassVar[str] = "xen"
    interface_version: ClassVar[str] = "1.0"
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
        self._reject_unknown_options(self.name, options, _OPTIONS)
        super().__init__(uri)
        self._url = _check_uri(uri)
        self._username = str(options.get("username", "root"))
        self._password = _password(options)
        self._verify = _flag(options.get("verify_tls", True), "verify_tls")
        self._timeout_s = _seconds(options.get("timeout", 30.0), "timeout")
        self._event_timeout_s = _seconds(options.get("event_timeout", 2.0), "event_timeout")
        if not self._verify:
            _LOG.warning("TLS certificate verification is off for %s", self._url)
        self._xapi = self._login()
        self._clean_tasks: dict[str, str] = {}
        self._stop_events = threading.Event()
        self._event_thread: threading.Thread | None = None
        self._watchers: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"<XenDriver {redact_uri(self._url)} user={self._username!r}>"

    def _login(self, timeout_s: float | None = None) -> _Xapi:
        return _Xapi(self._url, self._username, self._password, timeout_s or self._timeout_s, self._verify)

    # -- reading ------------------------------------------------------------------

    def _read_all(self) -> list[InstanceReading]:
        records: Mapping[str, Mapping[str, Any]] = self._xapi.call(lambda api: api.VM.get_all_records())
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
        if pending is not None and self._task_status(pending) == "pending":
            return  # xapi is still waiting on the guest; a second request would be refused
        task = self._on_vm(instance, "shutdown", lambda api, vm: api.Async.VM.clean_shutdown(vm))
        self._clean_tasks[instance.id] = task

    def _request_reboot(self, instance: InstanceReading) -> None:
        task = self._on_vm(instance, "reboot", lambda api, vm: api.Async.VM.clean_reboot(vm))
        watcher = threading.Thread(
            target=self._await_reboot, args=(instance.id, task), name="powerdrivers-xen-reboot", daemon=True
        )
        self._watchers = [thread for thread in self._watchers if thread.is_alive()] + [watcher]
        watcher.start()

    def _await_reboot(self, instance_id: str, task: str) -> None:
        """Publish REBOOTED when xapi reports the clean reboot done (xapi itself bounds the wait)."""
        while not self._stop_events.wait(0.05):
            try:
                status = self._task_status(task)
                if status == "pending":
                    continue
                if status == "success":
                    self._publish(EventKind.REBOOTED, self._read_one(instance_id))
            except PowerDriversError as error:
                _LOG.warning("xen: could not follow the reboot of %s: %s", instance_id, error)
            return

    def _task_status(self, task: str) -> str:
        return str(self._xapi.call(lambda api: api.task.get_status(task)))

    def _hard_reboot(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "hard_reboot", lambda api, vm: api.VM.hard_reboot(vm))
        self._publish(EventKind.REBOOTED, self._read_one(instance.id))

    def _pause(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "pause", lambda api, vm: api.VM.pause(vm))

    def _unpause(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "unpause", lambda api, vm: api.VM.unpause(vm))

    def _suspend(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "suspend", lambda api, vm: api.VM.suspend(vm))

    def _resume(self, instance: InstanceReading) -> None:
        self._on_vm(instance, "resume", lambda api, vm: api.VM.resume(vm, False, False))

    def _vcpu_stats(self, instance: InstanceReading, window_s: float) -> Sequence[VcpuStats]:
        # xapi publishes each VCPU's utilisation as a data source averaged over its own
        # interval; it has no per-VCPU wait time, so "waiting" is 0 and the rest is blocked.
        vm, record = self._vm(instance.id)
        time.sleep(window_s)
        count = int(record.get("VCPUs_max") or record.get("VCPUs_at_startup") or 1)
        stats = []
        for vcpu in range(count):
            value = self._xapi.call(
                _data_source(vm, f"cpu{vcpu}"), instance=instance.name, operation="vcpu_stats"
            )
            running = min(max(float(value), 0.0), 1.0)
            stats.append(VcpuStats(vcpu, running, 1.0 - running, 0.0, window_s))
        return stats

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

    def _event_baseline(self) -> tuple[dict[str, InstanceReading], str, _Xapi]:
        """Log in a session for events and read where things stand (an empty token lists everything)."""
        # The long poll may take event_timeout by design; only beyond that is the server silent.
        source = self._login(self._event_timeout_s + min(self._timeout_s, 5.0))
        batch = source.call(lambda api: getattr(api.event, "from")(["vm"], "", 0.0))
        baseline = {
            event["ref"]: _reading(event["snapshot"])
            for event in batch["events"]
            if event.get("operation") != "del" and _is_instance(event.get("snapshot") or {})
        }
        return baseline, str(batch["token"]), source

    def _event_loop(self, source: _Xapi, token: str, known: dict[str, InstanceReading]) -> None:
        delay = 0.1
        handle = source.handle
        while not self._stop_events.is_set():
            try:
                batch = source.call(_events_since(token, self._event_timeout_s))
            except PowerDriversError as error:
                _LOG.warning("xen event stream interrupted: %s; reconnecting", error)
                if self._stop_events.wait(delay):
                    break
                delay = min(delay * 2, 5.0)
                try:
                    known, token, source = self._event_baseline()
                except PowerDriversError:
                    continue
                delay = 0.1
                handle = source.handle
                self._publish_resync()
                continue
            token = str(batch["token"])
            for event in batch["events"]:
                self._dispatch(event, known)
            if source.handle != handle:
                # The SDK logged in again: xapi restarted or dropped the session, so
                # changes may have gone unseen. Start from what is true now.
                _LOG.warning("xen event session was re-established; resynchronising")
                source.logout()
                try:
                    known, token, source = self._event_baseline()
                except PowerDriversError:
                    continue
                self._publish_resync()
            handle = source.handle
        source.logout()

    def _dispatch(self, event: Mapping[str, Any], known: dict[str, InstanceReading]) -> None:
        ref = str(event.get("ref", ""))
        snapshot = event.get("snapshot") or {}
        after = None if event.get("operation") == "del" or not _is_instance(snapshot) else _reading(snapshot)
        before = known.get(ref)
        if after is None:
            known.pop(ref, None)
        else:
            known[ref] = after
        if before is None and after is None:
            return
        kind = change_kind(before, after)
        if kind is not None:
            reading = after or before
            assert reading is not None
            self._publish(kind, reading)

    # -- lifecycle -------------------------------------------------------------------------

    def _close(self) -> None:
        self._stop_events.set()
        self._xapi.logout()


def _record_of(vm: str) -> Callable[[Any], Mapping[str, Any]]:
    return lambda api: api.VM.get_record(vm)


def _data_source(vm: str, name: str) -> Callable[[Any], float]:
    return lambda api: float(api.VM.query_data_source(vm, name))


def _events_since(token: str, timeout_s: float) -> Callable[[Any], Mapping[str, Any]]:
    # "from" is a Python keyword, hence getattr.
    return lambda api: getattr(api.event, "from")(["vm"], token, timeout_s)


def _reading(record: Mapping[str, Any]) -> InstanceReading:
    operation = in_flight(record.get("current_operations") or {})
    return NATIVE_STATES.reading(
        str(record["uuid"]),
        str(record["name_label"]),
        str(record["power_state"]),
        operation,
        transition=POWER_OPERATIONS.get(operation or ""),
    )


def _is_instance(record: Mapping[str, Any]) -> bool:
    return bool(record) and not (
        record.get("is_a_template") or record.get("is_a_snapshot") or record.get("is_control_domain")
    )


def _is_uuid(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


def _check_uri(uri: str | None) -> str:
    if not uri:
        raise InvalidURI("the xen driver needs the pool master's URI, e.g. https://xenserver.example")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as error:
        raise InvalidURI(f"{redact_uri(uri)!r} is not a URI: {error}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidURI(f"the xen driver takes https://host[:port], not {redact_uri(uri)!r}")
    if parts.username or parts.password:
        raise InvalidURI(
            "give the user with -o username= and the password in POWERDRIVERS_PASSWORD, not in the URI"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidURI(f"the xen driver takes https://host[:port] with no path, not {redact_uri(uri)!r}")
    if parts.scheme == "http":
        _LOG.warning("connecting to xapi over plain http: the password crosses the network unencrypted")
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:
        netloc = f"[{parts.hostname}]" + (f":{port}" if port is not None else "")
    return f"{parts.scheme}://{netloc}/"


def _password(options: Mapping[str, Any]) -> Secret:
    value = options.get("password")
    if isinstance(value, Secret):
        return value
    if value is not None:
        return Secret(str(value))
    if "password_file" in options:
        path = Path(str(options["password_file"]))
        try:
            return Secret(path.read_text(encoding="utf-8").strip())
        except OSError as error:
            raise InvalidOption(f"cannot read password_file {path}: {error.strerror}") from None
    raise InvalidOption("the xen driver needs a password: set POWERDRIVERS_PASSWORD or -o password_file=PATH")


def _flag(value: object, option: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidOption(f"{option} must be true or false, not {value!r}")


def _seconds(value: object, option: str) -> float:
    try:
        seconds = float(str(value))
    except ValueError:
        raise InvalidOption(f"{option} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise InvalidOption(f"{option} must be a positive, finite number of seconds")
    return seconds
