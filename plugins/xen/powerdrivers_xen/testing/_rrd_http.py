"""xapi's ``/rrd_updates`` HTTP handler: the RRD rows of the VMs resident on the host since a time.

As xapi's metrics documentation describes it: ``GET /rrd_updates?session_id=<ref>&start=<epoch
seconds>`` with optional ``cf`` (``AVERAGE``, ``MIN``, ``MAX``), ``interval`` (seconds) and
``vm_uuid`` (repeatable; by default every resident VM), authenticated by the ``session_id``
query parameter or HTTP Basic credentials, answers rrdtool's ``xport`` XML: a ``meta`` block
(``start``, ``step``, ``end``, ``rows``, ``columns``, a ``legend`` whose entries read
``CF:vm:<uuid>:<data source>``) and ``data`` rows (``t``, then one ``v`` per legend entry,
newest row first). The simulator keeps the finest archive only (rows of ``step`` seconds, the
past :data:`~._rrd.ARCHIVE_ROWS` of them) holding averages, as xapi's RRDs do by default; it
answers XML only (not the ``json`` form) and no host or SR columns.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from ._lifecycle import PAUSED, RUNNING
from ._rrd import RUNSTATE_SOURCES
from ._world import World

RRD_UPDATES_PATH = "/rrd_updates"


@dataclass(frozen=True)
class HttpReply:
    """One HTTP answer: status, content type and body."""

    status: int
    content_type: str
    body: bytes


def _text(status: int, message: str) -> HttpReply:
    return HttpReply(status, "text/plain; charset=utf-8", message.encode())


@dataclass(frozen=True)
class _Vm:
    uuid: str
    vcpus: int
    power_state: str
    memory: int


class RrdHandler:
    """Answers ``GET /rrd_updates`` from the world's VMs and RRD store; or with scripted replies."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._scripted: list[HttpReply] = []
        self._lock = threading.Lock()
        self.requests = 0

    def script(self, reply: HttpReply) -> None:
        """Answer the next authenticated request with ``reply``, once (each call queues one)."""
        with self._lock:
            self._scripted.append(reply)

    def get(self, path: str, query: str, authorization: str | None) -> HttpReply:
        """Answer a GET of ``path`` with its query string and ``Authorization`` header."""
        if path != RRD_UPDATES_PATH:
            return _text(404, f"no handler for {path}")
        with self._lock:
            self.requests += 1
        params = parse_qs(query, keep_blank_values=True)
        if not self._authenticated(params, authorization):
            return _text(401, "Unauthorised")
        with self._lock:
            if self._scripted:
                return self._scripted.pop(0)
        try:
            start = int(params["start"][0])
        except (KeyError, ValueError):
            return _text(400, "start must be given, in whole seconds since the epoch")
        cf = params.get("cf", ["AVERAGE"])[0]
        wanted = set(params.get("vm_uuid", []))
        return HttpReply(200, "text/xml", self._xport(start, cf, wanted).encode())

    def _authenticated(self, params: Mapping[str, list[str]], authorization: str | None) -> bool:
        session = params.get("session_id", [""])[0]
        if session and self._world.sessions.is_valid(session):
            return True
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self._world.sessions.check_credentials(username, password)

    def _resident(self, wanted: set[str]) -> list[_Vm]:
        db, found = self._world.db, []
        with db.cond:
            for ref in db.find("VM", "resident_on", self._world.host_ref):
                record = db.raw("VM", ref)
                if record is None or record["power_state"] not in (RUNNING, PAUSED):
                    continue
                if wanted and record["uuid"] not in wanted:
                    continue
                metrics = db.raw("VM_metrics", record["metrics"])
                vcpus = int(metrics["VCPUs_number"] if metrics else record["VCPUs_at_startup"])
                memory = int(record["memory_target"])
                found.append(_Vm(record["uuid"], vcpus, record["power_state"], memory))
        return found

    def _xport(self, start: int, cf: str, wanted: set[str]) -> str:
        store = self._world.rrd
        now = time.time()
        times = store.row_times(start, now)
        columns: list[tuple[_Vm, str]] = []
        if cf == "AVERAGE":
            for vm in self._resident(wanted):
                names = [f"cpu{vcpu}" for vcpu in range(vm.vcpus)] + ["memory"]
                names += [name for name in RUNSTATE_SOURCES if store.recorded(vm.uuid, name)]
                columns += [(vm, name) for name in names]
        legend = "".join(f"<entry>AVERAGE:vm:{vm.uuid}:{name}</entry>" for vm, name in columns)
        rows = []
        for at in times:
            values: dict[str, dict[str, float]] = {}
            cells = []
            for vm, name in columns:
                if vm.uuid not in values:
                    values[vm.uuid] = store.sources(vm.uuid, vm.vcpus, vm.power_state, vm.memory, at)
                cells.append(f"<v>{values[vm.uuid][name]:.6f}</v>")
            rows.append(f"<row><t>{at}</t>{''.join(cells)}</row>")
        end = times[0] if times else start
        first = times[-1] - store.step if times else start
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<xport><meta>'
            f"<start>{first}</start><step>{store.step}</step><end>{end}</end>"
            f"<rows>{len(times)}</rows><columns>{len(columns)}</columns><legend>{legend}</legend>"
            f"</meta><data>{''.join(rows)}</data></xport>"
        )
