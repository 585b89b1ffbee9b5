"""Tasks: the records that track every operation, and their cancellation.

As in xapi, every lifecycle call runs under a task: an ``Async.`` call returns the task's
reference at once, a synchronous call's task lives only as long as the call. The task's
reference is the key of the VM's ``current_operations`` entry while the operation runs.
"""

from __future__ import annotations

import time

from ._database import Database
from ._errors import HANDLE_INVALID, TASK_CANCELLED, XapiError
from ._records import task_record
from ._wire import new_ref, new_uuid, timestamp

PENDING = "pending"
SUCCESS = "success"
FAILURE = "failure"
CANCELLING = "cancelling"
CANCELLED = "cancelled"


class TaskManager:
    """Creates, completes, cancels and destroys task records in the database."""

    def __init__(self, db: Database, host: str) -> None:
        self._db = db
        self._host = host
        self._destroy_when_done: set[str] = set()

    def create(self, name_label: str) -> str:
        """Create a pending task and return its reference."""
        ref = new_ref()
        record = task_record(uuid=new_uuid(), name_label=name_label, resident_on=self._host, now=time.time())
        self._db.insert("task", ref, record)
        return ref

    def _require(self, ref: str) -> dict[str, object]:
        record = self._db.raw("task", ref)
        if record is None:
            raise XapiError(HANDLE_INVALID, "task", ref)
        return record

    def status(self, ref: str) -> str:
        """Return the task's status string."""
        with self._db.cond:
            return str(self._require(ref)["status"])

    def cancel_requested(self, ref: str) -> bool:
        """Whether someone asked to cancel the task and it has not finished yet."""
        with self._db.cond:
            record = self._db.raw("task", ref)
            return record is not None and record["status"] == CANCELLING

    def set_progress(self, ref: str, progress: float) -> None:
        """Record how far the task has got (0.0 to 1.0)."""
        with self._db.cond:
            if self._db.exists("task", ref):
                self._db.update("task", ref, {"progress": progress})

    def request_cancel(self, ref: str) -> None:
        """Ask a pending task to stop; a finished task is left as it is, as xapi does."""
        with self._db.cond:
            if self._require(ref)["status"] == PENDING:
                self._db.update("task", ref, {"status": CANCELLING, "allowed_operations": []})

    def _finish(self, ref: str, changes: dict[str, object]) -> None:
        with self._db.cond:
            if not self._db.exists("task", ref):
                return
            changes.update({"finished": timestamp(time.time()), "allowed_operations": [], "progress": 1.0})
            self._db.update("task", ref, changes)
            if ref in self._destroy_when_done:
                self._destroy_when_done.discard(ref)
                self._db.delete("task", ref)

    def succeed(self, ref: str, result: str) -> None:
        """Complete the task with a result (``""`` for operations that return nothing)."""
        self._finish(ref, {"status": SUCCESS, "result": result})

    def fail(self, ref: str, error: XapiError) -> None:
        """Complete the task with an error; a cancellation ends it as cancelled."""
        status = CANCELLED if error.code == TASK_CANCELLED else FAILURE
        self._finish(ref, {"status": status, "error_info": error.description})

    def destroy(self, ref: str) -> None:
        """Remove a finished task now, or a pending one as soon as it finishes."""
        with self._db.cond:
            if self._require(ref)["status"] in (PENDING, CANCELLING):
                self._destroy_when_done.add(ref)
            else:
                self._db.delete("task", ref)

    def forget(self, ref: str) -> None:
        """Drop a synchronous call's task, whatever its state."""
        with self._db.cond:
            self._destroy_when_done.discard(ref)
            self._db.delete("task", ref)
