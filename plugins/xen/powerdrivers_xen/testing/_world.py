"""The simulated host's state: the database, sessions, tasks, guest behaviour and settings.

Everything that changes VMs goes through here under the database condition, so the
``allowed_operations`` field, the resident host, the domid and the metrics stay consistent
with ``power_state`` and ``current_operations``, and each change is one event.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from ._database import Database, Record
from ._lifecycle import PAUSED, RUNNING, allowed_operations
from ._records import host_record, pool_record, vm_metrics_record, vm_record
from ._rrd import RrdStore
from ._sessions import SessionStore
from ._spec import VmSpec, stable_uuid
from ._tasks import TaskManager
from ._wire import NULL_REF, int64, new_ref, timestamp

HOSTNAME = "xensim-host"
"""The simulated host's hostname and name label."""

_LIVE = (RUNNING, PAUSED)


@dataclass
class Settings:
    """Timing knobs, all in seconds, that tests may change while the simulator runs."""

    guest_delay: float = 0.3
    """How long a cooperative guest takes to act on a clean shutdown or reboot request."""
    op_delay: float = 0.05
    """How long every other power operation takes."""
    shutdown_timeout: float = 30.0
    """How long a clean shutdown/reboot waits for the guest before failing (xapi waits 1200 s)."""
    stats_interval: float = 5.0
    """How often the VCPU statistics change (xapi's RRDs sample every 5 s)."""
    rrd_step: int = 5
    """The seconds each row of the RRD archive ``/rrd_updates`` serves covers (xapi: 5)."""


class World:
    """One simulated xapi host: its objects and the rules that keep them consistent."""

    def __init__(self, username: str, password: str, settings: Settings) -> None:
        self.db = Database()
        self.settings = settings
        self.closing = threading.Event()
        self.sessions = SessionStore(username, password, self.db.notify)
        self.host_ref = new_ref()
        self.pool_ref = new_ref()
        self.tasks = TaskManager(self.db, self.host_ref)
        self.rrd = RrdStore(settings.rrd_step)
        self._uncooperative: set[str] = set()
        self._metrics_owner: dict[str, str] = {}
        self._next_domid = 1
        now = time.time()
        host = host_record(
            uuid=stable_uuid("host:" + HOSTNAME),
            name_label=HOSTNAME,
            hostname=HOSTNAME,
            control_domain=NULL_REF,
            now=now,
        )
        self.db.insert("host", self.host_ref, host)
        self.db.insert(
            "pool", self.pool_ref, pool_record(uuid=stable_uuid("pool:" + HOSTNAME), master=self.host_ref)
        )
        self.db.set_renderer("VM_metrics", self._render_metrics)
        self.db.set_renderer("host", self._render_host)

    # -- rendering of computed fields -------------------------------------------------------

    def _render_metrics(self, ref: str, record: Record) -> Record:
        vm = self.db.raw("VM", self._metrics_owner.get(ref, ""))
        if vm is None:
            return record
        now = time.time()
        interval = self.settings.stats_interval
        vcpus = int(record["VCPUs_number"])
        load = self.rrd.utilisation(vm["uuid"], vcpus, vm["power_state"], now, interval)
        record["VCPUs_utilisation"] = load
        if vm["power_state"] in _LIVE:
            record["last_updated"] = timestamp(math.floor(now / max(interval, 1e-3)) * interval)
        return record

    def _render_host(self, ref: str, record: Record) -> Record:
        record["resident_VMs"] = self.db.find("VM", "resident_on", ref)
        return record

    # -- VMs ---------------------------------------------------------------------------------

    def add_vm(self, spec: VmSpec) -> str:
        """Create a VM (and its metrics) from ``spec``; returns its reference."""
        uuid = spec.uuid or stable_uuid(spec.name_label)
        with self.db.cond:
            if self.db.find("VM", "uuid", uuid):
                raise ValueError(f"a VM with uuid {uuid} already exists")
            snapshot_of = self.resolve_vm(spec.snapshot_of) if spec.snapshot_of else NULL_REF
            now = time.time()
            memory = spec.memory_mib * 1024 * 1024
            vm_ref, metrics_ref = new_ref(), new_ref()
            metrics = vm_metrics_record(
                uuid=stable_uuid("metrics:" + uuid), vcpus=spec.vcpus, memory_bytes=memory, now=now
            )
            self.db.insert("VM_metrics", metrics_ref, metrics)
            self._metrics_owner[metrics_ref] = vm_ref
            record = vm_record(
                uuid=uuid,
                name_label=spec.name_label,
                name_description=spec.name_description,
                power_state=spec.power_state,
                vcpus=spec.vcpus,
                memory_bytes=memory,
                metrics=metrics_ref,
                now=now,
                is_a_template=spec.is_a_template or spec.is_a_snapshot,
                is_default_template=spec.is_default_template,
                is_a_snapshot=spec.is_a_snapshot,
                snapshot_of=snapshot_of,
                is_control_domain=spec.is_control_domain,
                other_config=dict(spec.other_config),
            )
            self.db.insert("VM", vm_ref, record)
            if not spec.cooperative:
                self._uncooperative.add(vm_ref)
            self.apply_power_state(vm_ref, spec.power_state, new_domain=True)
            if snapshot_of != NULL_REF:
                parent = self._vm(snapshot_of)
                self.db.update("VM", snapshot_of, {"snapshots": [*parent["snapshots"], vm_ref]})
            if spec.is_control_domain:
                self.db.update("host", self.host_ref, {"control_domain": vm_ref})
        return vm_ref

    def remove_vm(self, ref: str) -> None:
        """Delete a VM and its metrics (a del event for each)."""
        with self.db.cond:
            record = self._vm(ref)
            self.db.delete("VM", ref)
            self.db.delete("VM_metrics", record["metrics"])
            self._metrics_owner.pop(record["metrics"], None)
            self._uncooperative.discard(ref)

    def _vm(self, ref: str) -> Record:
        record = self.db.raw("VM", ref)
        if record is None:
            raise KeyError(f"no VM {ref}")
        return record

    def resolve_vm(self, key: str) -> str:
        """Return the reference of the VM ``key`` names: a reference, a uuid, or a unique name label."""
        with self.db.cond:
            if self.db.exists("VM", key):
                return key
            for field in ("uuid", "name_label"):
                found = self.db.find("VM", field, key)
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise KeyError(f"{len(found)} VMs are named {key!r}")
        raise KeyError(f"no VM is named, or has the uuid or reference, {key!r}")

    def apply_power_state(self, ref: str, state: str, *, new_domain: bool = False) -> None:
        """Set ``power_state`` and what follows from it: domid, resident host, metrics, allowed operations."""
        with self.db.cond:
            record = self._vm(ref)
            was_live = record["power_state"] in _LIVE and record["domid"] != "-1"
            changes: Record = {"power_state": state}
            if state in _LIVE:
                if new_domain or not was_live:
                    changes["domid"] = "0" if record["is_control_domain"] else self._new_domid()
                changes["resident_on"] = self.host_ref
            else:
                changes["domid"] = "-1"
                changes["resident_on"] = NULL_REF
            merged = {**record, **changes}
            changes["allowed_operations"] = allowed_operations(ref, merged)
            self.db.update("VM", ref, changes)
            if state in _LIVE and (new_domain or not was_live):
                now = time.time()
                vcpus = record["VCPUs_at_startup"]
                self.db.update(
                    "VM_metrics", record["metrics"], {"start_time": timestamp(now), "VCPUs_number": vcpus}
                )

    def _new_domid(self) -> str:
        domid = self._next_domid
        self._next_domid += 1
        return int64(domid)

    def set_current_operation(self, ref: str, task: str, operation: str | None) -> None:
        """Add (operation given) or remove (None) the task's entry in ``current_operations``."""
        with self.db.cond:
            record = self.db.raw("VM", ref)
            if record is None:
                return
            current = dict(record["current_operations"])
            if operation is None:
                if current.pop(task, None) is None:
                    return
            else:
                current[task] = operation
            merged = {**record, "current_operations": current}
            self.db.update(
                "VM",
                ref,
                {"current_operations": current, "allowed_operations": allowed_operations(ref, merged)},
            )

    def is_cooperative(self, ref: str) -> bool:
        """Whether the VM's guest acts on clean shutdown and reboot requests."""
        with self.db.cond:
            return ref not in self._uncooperative

    def set_cooperative(self, ref: str, cooperative: bool) -> None:
        """Make the guest honour (or ignore) clean shutdown/reboot requests, pending ones included."""
        with self.db.cond:
            self._vm(ref)
            if cooperative:
                self._uncooperative.discard(ref)
            else:
                self._uncooperative.add(ref)
            self.db.cond.notify_all()
