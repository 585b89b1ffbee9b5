"""The XenAPI method table: names, parameters, session checks and the xapi result envelope.

Every call answers ``{"Status": "Success", "Value": ...}`` or
``{"Status": "Failure", "ErrorDescription": [code, params...]}``, never an XML-RPC fault.
Checks run in xapi's order: the method must exist (MESSAGE_METHOD_UNKNOWN), the parameter count
must match (MESSAGE_PARAMETER_COUNT_MISMATCH), the session must be live (SESSION_INVALID), and
each parameter must have its type (FIELD_TYPE_ERROR). Object references are checked by the
method itself (HANDLE_INVALID), inside the task for ``Async.`` calls.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._database import Record
from ._errors import (
    FIELD_TYPE_ERROR,
    HANDLE_INVALID,
    INTERNAL_ERROR,
    MESSAGE_METHOD_UNKNOWN,
    MESSAGE_PARAMETER_COUNT_MISMATCH,
    UUID_INVALID,
    XapiError,
)
from ._events import EventService
from ._lifecycle import ADVERTISED_OPERATIONS, LIFECYCLE_OPERATIONS, PAUSED, RUNNING, operation_error
from ._power import PowerEngine
from ._records import host_record, pool_record, task_record, vm_metrics_record, vm_record
from ._rrd import RUNSTATE_SOURCES
from ._world import World

Handler = Callable[..., Any]

_REF, _STRING, _BOOL, _FLOAT, _STRINGS = "ref", "string", "bool", "float", "strings"

_NOTHING = object()
_CLASSES = ("VM", "VM_metrics", "task", "host", "pool")
_NAMED_CLASSES = ("VM", "task", "host")

_LIFECYCLE_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "start": (("vm", _REF), ("start_paused", _BOOL), ("force", _BOOL)),
    "start_on": (("vm", _REF), ("host", _REF), ("start_paused", _BOOL), ("force", _BOOL)),
    "resume": (("vm", _REF), ("start_paused", _BOOL), ("force", _BOOL)),
    "resume_on": (("vm", _REF), ("host", _REF), ("start_paused", _BOOL), ("force", _BOOL)),
}


@dataclass(frozen=True)
class _Method:
    handler: Handler
    params: tuple[tuple[str, str], ...] = ()
    session: bool = True
    optional: int = 0


def _type_ok(kind: str, value: object) -> bool:
    if kind in (_REF, _STRING):
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _FLOAT:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _prototype_fields() -> dict[str, frozenset[str]]:
    vm = vm_record(
        uuid="",
        name_label="",
        name_description="",
        power_state="",
        vcpus=1,
        memory_bytes=0,
        metrics="",
        now=0,
    )
    return {
        "VM": frozenset(vm),
        "VM_metrics": frozenset(vm_metrics_record(uuid="", vcpus=1, memory_bytes=0, now=0)),
        "task": frozenset(task_record(uuid="", name_label="", resident_on="", now=0)),
        "host": frozenset(host_record(uuid="", name_label="", hostname="", control_domain="", now=0)),
        "pool": frozenset(pool_record(uuid="", master="")),
    }


class XapiApi:
    """Dispatches one XML-RPC call to its implementation and wraps the outcome in the envelope."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._engine = PowerEngine(world)
        self._events = EventService(world.db, world.sessions, world.closing)
        self._fields = _prototype_fields()
        self._methods = self._build()
        self._calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._event_answers: list[Any] = []

    def dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        """Run ``method`` and return xapi's Success or Failure envelope."""
        with self._calls_lock:
            self._calls[method] += 1
        try:
            return {"Status": "Success", "Value": self._call(method, params)}
        except XapiError as error:
            return {"Status": "Failure", "ErrorDescription": error.description}
        except Exception as error:  # the wire answers every call, even a simulator bug
            return {
                "Status": "Failure",
                "ErrorDescription": [INTERNAL_ERROR, f"{type(error).__name__}: {error}"],
            }

    def call_count(self, method: str) -> int:
        """How many calls of ``method`` were received (answered or not)."""
        with self._calls_lock:
            return self._calls[method]

    @property
    def method_names(self) -> list[str]:
        """The explicitly listed methods (each class's ``get_<field>`` getters come on top)."""
        return sorted(self._methods)

    def _call(self, method: str, params: tuple[Any, ...]) -> Any:
        spec = self._lookup(method)
        expected = len(spec.params) + (1 if spec.session else 0)
        if not expected - spec.optional <= len(params) <= expected:
            raise XapiError(MESSAGE_PARAMETER_COUNT_MISMATCH, method, str(expected), str(len(params)))
        args = list(params)
        session = self._world.sessions.validate(args.pop(0)) if spec.session else ""
        for (name, kind), value in zip(spec.params, args, strict=False):
            if not _type_ok(kind, value):
                raise XapiError(FIELD_TYPE_ERROR, name)
        return spec.handler(session, *args)

    def _lookup(self, method: str) -> _Method:
        found = self._methods.get(method)
        if found is not None:
            return found
        cls, _, name = method.partition(".")
        field = name.removeprefix("get_")
        if cls in self._fields and name.startswith("get_") and field in self._fields[cls]:
            return _Method(self._getter(cls, field), (("self", _REF),))
        raise XapiError(MESSAGE_METHOD_UNKNOWN, method)

    # -- the table ----------------------------------------------------------------------------

    def _build(self) -> dict[str, _Method]:
        methods: dict[str, _Method] = {
            "session.login_with_password": _Method(
                self._login,
                (("uname", _STRING), ("pwd", _STRING), ("version", _STRING), ("originator", _STRING)),
                False,
                2,
            ),
            "session.logout": _Method(self._logout),
            "session.get_this_host": _Method(self._this_host, (("self", _REF),)),
            "event.from": _Method(
                self._event_from, (("classes", _STRINGS), ("token", _STRING), ("timeout", _FLOAT))
            ),
            "task.cancel": _Method(self._task_cancel, (("task", _REF),)),
            "task.destroy": _Method(self._task_destroy, (("self", _REF),)),
            "VM.assert_operation_valid": _Method(
                self._assert_operation_valid, (("self", _REF), ("op", _STRING))
            ),
            "VM.get_data_sources": _Method(self._get_data_sources, (("self", _REF),)),
            "VM.query_data_source": _Method(
                self._query_data_source, (("self", _REF), ("data_source", _STRING))
            ),
            "VM.record_data_source": _Method(
                self._record_data_source, (("self", _REF), ("data_source", _STRING))
            ),
        }
        for cls in _CLASSES:
            methods[f"{cls}.get_all"] = _Method(self._get_all(cls))
            methods[f"{cls}.get_all_records"] = _Method(self._get_all_records(cls))
            methods[f"{cls}.get_record"] = _Method(self._get_record(cls), (("self", _REF),))
            methods[f"{cls}.get_by_uuid"] = _Method(self._get_by_uuid(cls), (("uuid", _STRING),))
        for cls in _NAMED_CLASSES:
            methods[f"{cls}.get_by_name_label"] = _Method(self._get_by_name_label(cls), (("label", _STRING),))
        for operation in LIFECYCLE_OPERATIONS:
            params = _LIFECYCLE_PARAMS.get(operation, (("vm", _REF),))
            methods[f"VM.{operation}"] = _Method(self._lifecycle(operation, False), params)
            methods[f"Async.VM.{operation}"] = _Method(self._lifecycle(operation, True), params)
        return methods

    # -- generic object access ------------------------------------------------------------------

    def _record(self, cls: str, ref: str) -> Record:
        record = self._world.db.get(cls, ref)
        if record is None:
            raise XapiError(HANDLE_INVALID, cls, ref)
        return record

    def _get_all(self, cls: str) -> Handler:
        return lambda session: self._world.db.refs(cls)

    def _get_all_records(self, cls: str) -> Handler:
        def handler(session: str) -> dict[str, Record]:
            with self._world.db.cond:
                return {ref: self._record(cls, ref) for ref in self._world.db.refs(cls)}

        return handler

    def _get_record(self, cls: str) -> Handler:
        return lambda session, ref: self._record(cls, ref)

    def _getter(self, cls: str, field: str) -> Handler:
        return lambda session, ref: self._record(cls, ref)[field]

    def _get_by_uuid(self, cls: str) -> Handler:
        def handler(session: str, uuid: str) -> str:
            found = self._world.db.find(cls, "uuid", uuid)
            if not found:
                raise XapiError(UUID_INVALID, cls, uuid)
            return found[0]

        return handler

    def _get_by_name_label(self, cls: str) -> Handler:
        return lambda session, label: self._world.db.find(cls, "name_label", label)

    # -- sessions, events, tasks ------------------------------------------------------------------

    def _login(self, session: str, uname: str, pwd: str, version: str = "", originator: str = "") -> str:
        return self._world.sessions.login(uname, pwd, originator)

    def _logout(self, session: str) -> str:
        self._world.sessions.logout(session)
        return ""

    def _this_host(self, session: str, ref: str) -> str:
        if not self._world.sessions.is_valid(ref):
            raise XapiError(HANDLE_INVALID, "session", ref)
        return self._world.host_ref

    def answer_event_from(self, value: Any) -> None:
        """Make the next event.from call (after its checks) answer ``value`` instead, once."""
        with self._calls_lock:
            self._event_answers.append(value)

    def _event_from(self, session: str, classes: list[str], token: str, timeout: float) -> Any:
        with self._calls_lock:
            scripted = self._event_answers.pop(0) if self._event_answers else _NOTHING
        if scripted is not _NOTHING:
            return scripted
        return self._events.event_from(session, classes, token, timeout)

    def _task_cancel(self, session: str, task: str) -> str:
        self._world.tasks.request_cancel(task)
        return ""

    def _task_destroy(self, session: str, task: str) -> str:
        self._world.tasks.destroy(task)
        return ""

    # -- VM specifics -------------------------------------------------------------------------------

    def _assert_operation_valid(self, session: str, vm: str, operation: str) -> str:
        if operation not in ADVERTISED_OPERATIONS:
            raise XapiError(FIELD_TYPE_ERROR, "op")
        with self._world.db.cond:
            record = self._world.db.raw("VM", vm)
            if record is None:
                raise XapiError(HANDLE_INVALID, "VM", vm)
            error = operation_error(vm, record, operation)
        if error is not None:
            raise error
        return ""

    def _data_sources(self, vm: str) -> list[dict[str, object]]:
        record = self._record("VM", vm)
        metrics = self._world.db.get("VM_metrics", record["metrics"])
        vcpus = int(metrics["VCPUs_number"] if metrics is not None else record["VCPUs_at_startup"])
        now, interval = time.time(), self._world.settings.stats_interval
        memory = int(record["memory_target"])
        rrd = self._world.rrd
        return rrd.data_sources(record["uuid"], vcpus, record["power_state"], memory, now, interval)

    def _get_data_sources(self, session: str, vm: str) -> list[dict[str, object]]:
        return self._data_sources(vm)

    def _query_data_source(self, session: str, vm: str, name: str) -> float:
        record = self._record("VM", vm)
        if record["power_state"] not in (RUNNING, PAUSED):
            raise XapiError(
                INTERNAL_ERROR, f"VM {record['uuid']} is not running: it has no live data sources"
            )
        for source in self._data_sources(vm):
            value = source["value"]
            if source["name_label"] == name and isinstance(value, float):
                return value
        raise XapiError(INTERNAL_ERROR, f"VM {record['uuid']} has no data source {name}")

    def _record_data_source(self, session: str, vm: str, name: str) -> str:
        record = self._record("VM", vm)
        if name not in RUNSTATE_SOURCES and name not in {s["name_label"] for s in self._data_sources(vm)}:
            raise XapiError(INTERNAL_ERROR, f"VM {record['uuid']} has no data source {name}")
        self._world.rrd.record(record["uuid"], name)
        return ""

    def _lifecycle(self, operation: str, is_async: bool) -> Handler:
        label = ("Async." if is_async else "") + "VM." + operation
        tasks = self._world.tasks

        def handler(session: str, vm: str, *args: Any) -> str:
            task = tasks.create(label)
            if is_async:
                thread = threading.Thread(
                    target=self._run_async,
                    args=(task, operation, vm, args),
                    name=f"xapi-sim {label}",
                    daemon=True,
                )
                thread.start()
                return task
            try:
                return self._engine.run(task, operation, vm, tuple(args))
            finally:
                tasks.forget(task)

        return handler

    def _run_async(self, task: str, operation: str, vm: str, args: tuple[Any, ...]) -> None:
        tasks = self._world.tasks
        try:
            result = self._engine.run(task, operation, vm, args)
        except XapiError as error:
            tasks.fail(task, error)
        except Exception as error:  # a simulator bug still ends the task
            tasks.fail(task, XapiError(INTERNAL_ERROR, f"{type(error).__name__}: {error}"))
        else:
            tasks.succeed(task, result)
