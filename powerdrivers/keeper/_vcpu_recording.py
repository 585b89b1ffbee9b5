"""Sampling the VCPUs of the keeper's hosts: one round per host every interval, stored, trimmed, told.

**One thread for all hosts**, not one per host. A round is one bulk hypervisor call
(:class:`powerdrivers.VcpuSampler`) and one insert, milliseconds each, every
``vcpu_sample_interval`` (15 s by default): a single thread keeps up with hundreds of hosts,
and a keeper of many hosts (a fleet process keeps a hundred) keeps a bounded number of threads.
The cost is that a host whose hypervisor is slow to answer delays the other hosts' rounds by
that call (drivers bound their calls with timeouts); the statistics stay right all the same, as
each window is measured by the sampler's own clock, not assumed to be the interval.

Hosts are sampled in turn, each on its own schedule (a host added later starts at once); the
first call of a host only primes its sampler, so its first stored round comes one interval
later. The thread waits on a condition, so :meth:`VcpuRecorder.stop` and
:meth:`VcpuRecorder.remove_host` return as soon as a round under way ends, never after a
whole interval. Samples older than ``vcpu_retention`` are deleted every quarter of the
retention (at most every 5 minutes), so the store keeps at most about 1.25 times
``vcpu_retention / vcpu_sample_interval`` samples per VCPU.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from powerdrivers import Driver, InstanceVcpuStats, PowerDriversError, UnsupportedOperation, VcpuSampler
from powerdrivers.keeper._errors import KeeperError
from powerdrivers.keeper._handoff import utcnow
from powerdrivers.keeper._listeners import HostListeners
from powerdrivers.keeper._model import VcpuSample
from powerdrivers.keeper._settings import KeeperSettings
from powerdrivers.keeper._store_api import KeeperStore

_LOG = logging.getLogger("powerdrivers.keeper")

#: The longest time between two trims of old samples, however long the retention.
_MAX_TRIM_EVERY_S: Final = 300.0

VcpuListener = Callable[[str, list[VcpuSample]], None]


class _Sampled:
    """One host's sampling: its sampler, when its next round is due, and what went wrong last."""

    __slots__ = ("due", "failing", "name", "sampler")

    def __init__(self, name: str, driver: Driver, due: float) -> None:
        self.name = name
        self.sampler = VcpuSampler(driver)
        self.due = due
        self.failing: str | None = None
        """What the last round failed at (reading, storing), so a lasting failure is logged once."""


class VcpuRecorder:
    """Samples the VCPUs of the running instances of the hosts added, on one thread, while started.

    Nothing runs when ``settings.vcpu_sample_interval`` is 0. A driver without bulk VCPU
    counters (``UnsupportedOperation``) is logged once (info) and its host no longer sampled;
    hypervisor and store errors are logged (a warning when they start, info when they end) and
    sampling goes on. Listeners get ``(host, samples)`` after each round stored (an empty list
    when nothing runs on the host, and for a host's first round, which only primes), on the
    sampling thread: they must be quick, and must not stop the keeper or remove a host.
    """

    def __init__(self, store: KeeperStore, settings: KeeperSettings) -> None:
        self._store = store
        self._interval = settings.vcpu_sample_interval
        self._retention = settings.vcpu_retention
        self._trim_every = min(self._retention / 4, _MAX_TRIM_EVERY_S)
        self._next_trim = 0.0
        self._trim_failing = False
        self._listeners: HostListeners[list[VcpuSample]] = HostListeners(_LOG, "VCPU listener")
        self._changed = threading.Condition()
        self._hosts: dict[str, _Sampled] = {}
        self._busy: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether sampling is on (an interval above 0)."""
        return self._interval > 0

    def add_listener(self, listener: VcpuListener) -> Callable[[], None]:
        """Call ``listener(host, samples)`` after each stored round; return its remover.

        Raises ``KeeperError`` for a listener that is not callable.
        """
        if not callable(listener):
            raise KeeperError(
                f"a VCPU listener is called with each round, so not a {type(listener).__name__}"
            )
        return self._listeners.add(listener)

    def start(self) -> None:
        """Start the sampling thread (when sampling is on); a second call does nothing."""
        with self._changed:
            if not self.enabled or self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, name="keeper-vcpu", daemon=True)
            self._thread.start()

    def add_host(self, name: str, driver: Driver) -> None:
        """Sample ``name`` from now on (its first round primes the sampler)."""
        if not self.enabled:
            return
        with self._changed:
            self._hosts[name] = _Sampled(name, driver, time.monotonic())
            self._changed.notify_all()

    def remove_host(self, name: str) -> None:
        """Stop sampling ``name``; returns once a round of it under way has ended (the driver is free)."""
        with self._changed:
            self._hosts.pop(name, None)
            if threading.current_thread() is self._thread:
                return  # a listener removing its own host: the round is this very call
            while self._busy == name:
                self._changed.wait()

    def stop(self) -> None:
        """Stop sampling and join the thread (after the round under way, if any)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                host = self._next_due()
                if host is None:
                    return
                self._busy = host.name
            try:
                self._round(host)
                self._trim_if_due()
            except Exception as error:
                # Whatever went wrong with one host must not end the sampling of every host.
                self._failed(host, "a VCPU sampling round", error)
            finally:
                with self._changed:
                    self._busy = None
                    now = time.monotonic()
                    # Keep the pace; a host that fell behind (a slow hypervisor) skips, not bunches.
                    host.due = (
                        host.due + self._interval if host.due + self._interval > now else now + self._interval
                    )
                    self._changed.notify_all()

    def _next_due(self) -> _Sampled | None:
        """Wait (holding the condition) for the next host due; ``None`` once stopping."""
        while not self._stopping:
            host = min(self._hosts.values(), key=lambda sampled: sampled.due, default=None)
            wait = math.inf if host is None else host.due - time.monotonic()
            if host is not None and wait <= 0:
                return host
            self._changed.wait(None if wait == math.inf else wait)
        return None

    def _round(self, host: _Sampled) -> None:
        try:
            stats = host.sampler.sample()
        except UnsupportedOperation as error:
            _LOG.info("keeper: host %s: no VCPU sampling: %s", host.name, error)
            with self._changed:
                if self._hosts.get(host.name) is host:
                    del self._hosts[host.name]
            return
        except (PowerDriversError, ValueError) as error:
            # ValueError: counters a driver read that make no sense (a fault of the driver's).
            self._failed(host, "reading the VCPU counters", error)
            return
        at = utcnow()
        try:
            if stats:
                self._store.record_vcpu_samples(host.name, at, stats)
        except KeeperError as error:
            self._failed(host, "storing the VCPU samples", error)
            return
        if host.failing is not None:
            _LOG.info("keeper: host %s: VCPU sampling works again", host.name)
            host.failing = None
        self._listeners(host.name, samples(host.name, at, stats))

    def _failed(self, host: _Sampled, what: str, error: Exception) -> None:
        if host.failing != what:
            _LOG.warning("keeper: host %s: %s failed (retried each round): %s", host.name, what, error)
        host.failing = what

    def _trim_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_trim:
            return
        self._next_trim = now + self._trim_every
        try:
            self._store.trim_vcpu_samples(utcnow() - timedelta(seconds=self._retention))
        except KeeperError as error:
            if not self._trim_failing:
                _LOG.warning("keeper: trimming old VCPU samples failed: %s", error)
            self._trim_failing = True
        else:
            self._trim_failing = False


def samples(host: str, at: datetime, stats: list[InstanceVcpuStats]) -> list[VcpuSample]:
    """Return a round's statistics as the samples the store keeps of it (one per VCPU)."""
    return [VcpuSample.of(instance.id, host, at, vcpu) for instance in stats for vcpu in instance.vcpus]
