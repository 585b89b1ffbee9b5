"""The simulator object tests drive: server lifecycle, fault injection and world controls."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ._api import XapiApi
from ._database import Record
from ._defaults import DEFAULT_VMS
from ._rrd import VcpuLoad
from ._rrd_http import HttpReply, RrdHandler
from ._server import ResponseGate, XmlRpcServer
from ._spec import VmSpec
from ._world import Settings, World

DEFAULT_USERNAME = "root"
"""The username a simulator accepts unless told otherwise."""

DEFAULT_PASSWORD = "xensim"  # noqa: S105 - a fixed test credential for a loopback-only simulator
"""The password a simulator accepts unless told otherwise."""


class XapiSimulator:
    """A simulated xapi host on ``http://127.0.0.1:<port>/``, speaking XenAPI over XML-RPC.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). ``port=0`` picks a free
    port once; :meth:`restart` keeps it. The timing knobs are in seconds: ``guest_delay`` is how
    long cooperative guests take to honour clean shutdown/reboot, ``op_delay`` how long other
    operations take, ``shutdown_timeout`` how long a clean shutdown/reboot of an uncooperative
    guest waits before failing with VM_SHUTDOWN_TIMEOUT, ``stats_interval`` how often live VCPU
    statistics change; ``rrd_step`` (whole seconds) is the step of the RRD rows ``/rrd_updates``
    serves. ``populate=False`` starts with no VMs at all.
    """

    def __init__(
        self,
        *,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        host: str = "127.0.0.1",
        port: int = 0,
        guest_delay: float = 0.3,
        op_delay: float = 0.05,
        shutdown_timeout: float = 30.0,
        stats_interval: float = 5.0,
        rrd_step: int = 5,
        populate: bool = True,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the simulator listens on loopback only, not {host}")
        self._host = host
        self._port = port
        settings = Settings(guest_delay, op_delay, shutdown_timeout, stats_interval, rrd_step)
        self._world = World(username, password, settings)
        self._api = XapiApi(self._world)
        self._rrd = RrdHandler(self._world)
        self._gate = ResponseGate()
        self._server: XmlRpcServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if populate:
            for spec in DEFAULT_VMS:
                self._world.add_vm(spec)

    # -- server lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> XapiSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The URL to give ``XenAPI.Session``: ``http://127.0.0.1:<port>/``."""
        if self._port == 0:
            raise RuntimeError("the simulator has no port until it is started")
        return f"http://{self._host}:{self._port}/"

    @property
    def port(self) -> int:
        """The TCP port (0 until the first start)."""
        return self._port

    @property
    def running(self) -> bool:
        """Whether the server is accepting calls."""
        return self._server is not None

    def start(self) -> XapiSimulator:
        """Start serving (a no-op when already serving); returns the simulator."""
        with self._lock:
            if self._server is None:
                self._world.closing.clear()
                self._serve()
        return self

    def stop(self) -> None:
        """Stop serving: open connections drop, waiting calls and operations end promptly."""
        with self._lock:
            self._world.closing.set()
            self._world.db.notify()
            self._halt()

    def restart(self) -> None:
        """Stop and start again on the same port, losing every session, as a toolstack restart does.

        VMs keep their state and operations in flight go on, as domains and xenopsd outlive xapi;
        calls held by :meth:`hang` are released (onto dropped connections).
        """
        with self._lock:
            self._halt()
            self._world.sessions.expire_all()
            self._serve()

    def _serve(self) -> None:
        server = XmlRpcServer((self._host, self._port), self._api.dispatch, self._gate, self._rrd.get)
        self._port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.name = f"xapi-sim :{self._port}"
        thread.start()
        self._server, self._thread = server, thread

    def _halt(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        self._gate.resume()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    @property
    def guest_delay(self) -> float:
        """Seconds a cooperative guest takes to honour clean shutdown/reboot."""
        return self._world.settings.guest_delay

    @property
    def shutdown_timeout(self) -> float:
        """Seconds a clean shutdown/reboot waits for the guest before VM_SHUTDOWN_TIMEOUT."""
        return self._world.settings.shutdown_timeout

    # -- fault injection ---------------------------------------------------------------------------

    def hang(self, seconds: float) -> None:
        """Hold every call (those arriving meanwhile too) for ``seconds``, so clients time out."""
        self._gate.hang(seconds)

    def stall(self, seconds: float) -> None:
        """Stop answering for ``seconds``: open connections drop and new ones close unanswered.

        Unlike :meth:`restart`, sessions survive and nothing else changes; unlike :meth:`hang`,
        clients see connection errors at once rather than silence. Operations in flight go on.
        """
        self._gate.refuse(seconds)
        with self._lock:
            server = self._server
        if server is not None:
            server.drop_connections()

    def pause_responses(self) -> None:
        """Hold every call until :meth:`resume_responses` (at most ten minutes)."""
        self._gate.pause()

    def resume_responses(self) -> None:
        """Release held calls and stop holding new ones."""
        self._gate.resume()

    def answer_event_from(self, value: Any) -> None:
        """Make the next ``event.from`` call answer ``value`` as its result, once (malformed data...).

        Each call queues one answer; the session and parameters are still checked first.
        """
        self._api.answer_event_from(value)

    def answer_rrd_updates(self, body: bytes, *, status: int = 200, content_type: str = "text/xml") -> None:
        """Make the next authenticated ``/rrd_updates`` request answer this, once (malformed data...)."""
        self._rrd.script(HttpReply(status, content_type, body))

    @property
    def rrd_requests(self) -> int:
        """How many ``/rrd_updates`` requests arrived (answered or refused) since the start."""
        return self._rrd.requests

    def expire_sessions(self) -> None:
        """Invalidate every session: the next call on each fails with SESSION_INVALID."""
        self._world.sessions.expire_all()

    def set_credentials(self, username: str, password: str) -> None:
        """Accept only this username/password from now on (open sessions stay valid)."""
        self._world.sessions.set_credentials(username, password)

    def call_count(self, method: str) -> int:
        """How many calls of ``method`` (``"task.get_status"``...) reached the API since the start."""
        return self._api.call_count(method)

    @property
    def session_count(self) -> int:
        """How many sessions are open."""
        return self._world.sessions.count

    # -- the world -----------------------------------------------------------------------------------

    def add_vm(self, name_label: str, power_state: str = "Halted", **fields: Any) -> str:
        """Add a VM and return its ref; ``fields`` are :class:`VmSpec` fields (``vcpus=4``...)."""
        return self._world.add_vm(VmSpec(name_label, power_state, **fields))

    def remove_vm(self, vm: str) -> None:
        """Delete a VM (by ref, uuid or name label)."""
        self._world.remove_vm(self.vm_ref(vm))

    def vm_ref(self, vm: str) -> str:
        """Return the reference of a VM given by ref, uuid or unique name label."""
        return self._world.resolve_vm(vm)

    def vm_record(self, vm: str) -> Record:
        """Return a copy of a VM's record as a client would read it."""
        record = self._world.db.get("VM", self.vm_ref(vm))
        assert record is not None
        return record

    def set_power_state(self, vm: str, state: str) -> None:
        """Force a VM's ``power_state`` to any string (``"Crashed"``, or one xapi never sends)."""
        self._world.apply_power_state(self.vm_ref(vm), state)

    def set_guest_behaviour(self, vm: str, *, cooperative: bool) -> None:
        """Make a VM's guest honour or ignore clean shutdown/reboot (pending requests included)."""
        self._world.set_cooperative(self.vm_ref(vm), cooperative)

    def set_guest_delay(self, seconds: float) -> None:
        """How long cooperative guests take to honour clean shutdown/reboot from now on."""
        self._world.settings.guest_delay = seconds
        self._world.db.notify()

    def set_shutdown_timeout(self, seconds: float) -> None:
        """How long clean shutdown/reboot waits for the guest before VM_SHUTDOWN_TIMEOUT."""
        self._world.settings.shutdown_timeout = seconds
        self._world.db.notify()

    def set_vcpu_load(self, vm: str, running: Sequence[float], waiting: Sequence[float] = ()) -> None:
        """Make each VCPU of a VM run and wait (for a physical CPU) these fractions of every step.

        Blocked is the rest; the domain's run-state fractions follow from these loads. It applies
        to every RRD row and live value served from now on (earlier steps included).
        """
        record = self.vm_record(vm)
        padded = list(waiting) + [0.0] * (len(running) - len(waiting))
        loads = [VcpuLoad(run, wait) for run, wait in zip(running, padded, strict=True)]
        self._world.rrd.set_loads(record["uuid"], loads)

    def set_stats_interval(self, seconds: float) -> None:
        """How often VCPU statistics change."""
        self._world.settings.stats_interval = seconds

    @property
    def method_names(self) -> list[str]:
        """The XML-RPC methods served (plus ``<class>.get_<field>`` for every record field)."""
        return self._api.method_names
