"""The primitives a driver implements: the hypervisor-specific half of :class:`powerdrivers.Driver`.

Each primitive's docstring is its contract (when the core calls it, what it
returns, what it may raise); the documentation renders them as members of
``Driver``, which inherits them from here.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Sequence
from typing import ClassVar

from powerdrivers._exceptions import UnsupportedOperation
from powerdrivers._operations import Operation
from powerdrivers._reading import InstanceReading
from powerdrivers._spec import InstanceSpec
from powerdrivers._vcpu import InstanceVcpuCounters, VcpuStats, stats_between


class DriverPrimitives(abc.ABC):
    """The primitives of :class:`powerdrivers.Driver`: four abstract, the rest optional with a default.

    Not public: drivers subclass ``Driver``, which adds the public methods
    that check their arguments and the state, then call these.
    """

    #: Declared by every driver (see ``Driver.name``); a refused primitive names it.
    name: ClassVar[str]

    @abc.abstractmethod
    def _read_all(self) -> Iterable[InstanceReading]:
        """Read every instance; one bulk hypervisor call where the API has one.

        Called by :meth:`list_instances`, and every ``poll_interval_s``
        seconds, on its own thread, by the polling event source of a driver
        without ``native_events``. Raises only the hypervisor errors
        (``HypervisorConnectionError``, ``AuthenticationError``,
        ``OperationTimeout``, ``HypervisorError``).
        """

    @abc.abstractmethod
    def _read_one(self, ref: str) -> InstanceReading:
        """Read one instance by id or name.

        Called by :meth:`get_instance`, so before every operation, and
        between the requests of a graceful shutdown. ``ref`` is a checked,
        non-empty string. Raises ``InstanceNotFound`` when no instance has
        that id or name, and the hypervisor errors.
        """

    @abc.abstractmethod
    def _start(self, instance: InstanceReading) -> InstanceReading | None:
        """Power the instance on; return once the hypervisor reports it running.

        Called by :meth:`start` from ``shutoff``, ``crashed`` or
        ``suspended`` (restore the saved memory), and by a hard reboot of a
        driver without ``hard_reboot``, after ``_power_off``. May return the
        instance's new reading, saving :meth:`start` a round trip (the hard
        reboot ignores it). Raises ``InvalidStateTransition`` when the
        hypervisor refuses because the state changed meanwhile, and the
        hypervisor errors.
        """

    @abc.abstractmethod
    def _power_off(self, instance: InstanceReading) -> InstanceReading | None:
        """Stop the instance at once; return once the hypervisor reports it off.

        Called by :meth:`power_off`, by a graceful shutdown that forces (at
        its timeout, or at once for a paused guest), and by a hard reboot of
        a driver without ``hard_reboot``. May return the instance's new
        reading, saving :meth:`power_off` a round trip (the forcing callers
        ignore it). Raises ``InvalidStateTransition`` when the instance is
        already off (a forcing shutdown then reads it again and reports how
        it went off), and the hypervisor errors.
        """

    def _request_shutdown(self, instance: InstanceReading) -> None:
        """Ask the guest to shut down (ACPI, agent...) and return without waiting.

        Called by :meth:`shutdown` while the instance is ``running``: first,
        then again every ``retry_interval`` seconds until the hypervisor
        reports it off or the timeout comes, so it must accept a request
        already pending. Returns nothing (the core waits for the "off" event
        or reading). Raises the hypervisor errors: a lost connection or an
        ``OperationTimeout`` is logged and the request sent again at the
        next interval; any other error (``AuthenticationError`` included)
        ends the shutdown.
        """
        raise UnsupportedOperation(self.name, Operation.SHUTDOWN.value)

    def _request_reboot(self, instance: InstanceReading) -> None:
        """Ask the guest to reboot and return; report ``REBOOTED`` when it has.

        Called once by :meth:`reboot` (not ``hard``) while the instance is
        ``running``. Returns nothing. The core waits for that ``REBOOTED``
        (reported from any thread) to call the reboot graceful; without it,
        the reboot falls back to a hard one at the timeout (or ends
        ``timed_out`` without ``force``). Raises the hypervisor errors,
        which end the reboot.
        """
        raise UnsupportedOperation(self.name, Operation.REBOOT.value)

    def _hard_reboot(self, instance: InstanceReading) -> InstanceReading | None:
        """Reset the instance without asking the guest; return once it runs again.

        Called by :meth:`reboot` with ``hard``, and by a soft reboot that
        timed out with ``force``, from ``running``, ``paused`` or
        ``crashed``. May return the instance's new reading: the
        ``REBOOTED`` event the core reports afterwards shows it (unless the
        driver reported the reset meanwhile or declares
        :attr:`reports_resets`). Raises ``InvalidStateTransition`` when the
        state changed meanwhile, and the hypervisor errors.
        """
        raise UnsupportedOperation(self.name, Operation.HARD_REBOOT.value)

    def _pause(self, instance: InstanceReading) -> InstanceReading | None:
        """Pause the instance's VCPUs, keeping its memory; return once it is paused.

        Called by :meth:`pause` from ``running``. May return the instance's
        new reading, saving the core a round trip. Raises
        ``InvalidStateTransition`` when the state changed meanwhile, and the
        hypervisor errors.
        """
        raise UnsupportedOperation(self.name, Operation.PAUSE.value)

    def _unpause(self, instance: InstanceReading) -> InstanceReading | None:
        """Schedule a paused instance's VCPUs again; return once it runs.

        Called by :meth:`unpause` from ``paused``. May return the instance's
        new reading, saving the core a round trip. Raises
        ``InvalidStateTransition`` when the state changed meanwhile, and the
        hypervisor errors.
        """
        raise UnsupportedOperation(self.name, Operation.UNPAUSE.value)

    def _suspend(self, instance: InstanceReading) -> InstanceReading | None:
        """Save the instance's memory outside the hypervisor and stop it.

        Called by :meth:`suspend` from ``running``; return once the instance
        reads ``suspended``. May return the instance's new reading, saving
        the core a round trip. Raises ``InvalidStateTransition`` when the
        state changed meanwhile, and the hypervisor errors.
        """
        raise UnsupportedOperation(self.name, Operation.SUSPEND.value)

    def _resume(self, instance: InstanceReading) -> InstanceReading | None:
        """Restore a suspended instance and run it; return once it runs.

        Called by :meth:`resume` from ``suspended``. May return the
        instance's new reading, saving the core a round trip. Raises
        ``InvalidStateTransition`` when the state changed meanwhile, and the
        hypervisor errors.
        """
        raise UnsupportedOperation(self.name, Operation.RESUME.value)

    def _spawn(self, spec: InstanceSpec) -> InstanceReading:
        """Create an instance from ``spec`` and start it; return its reading.

        Called by :meth:`spawn` with a checked :class:`InstanceSpec`. Must
        return the new instance's reading (not optional: the core takes its
        id and reads the instance again). Events about ``spec.name`` while
        it runs are attributed to the spawn. Leave nothing behind when it
        fails. Raises ``InvalidSpec`` for a spec this hypervisor cannot
        honour (too many VCPUs, an unusable image...), and the hypervisor
        errors.
        """
        raise UnsupportedOperation(self.name, Operation.SPAWN.value)

    def _delete(self, instance: InstanceReading) -> None:
        """Stop the instance if it runs and remove it with any saved state.

        Called by :meth:`delete`, in any power state; return once the
        hypervisor no longer knows the instance. Returns nothing: there is
        no reading of a removed instance. Raises ``InstanceNotFound`` when
        it is already gone, and the hypervisor errors.
        """
        raise UnsupportedOperation(self.name, Operation.DELETE.value)

    def _vcpu_stats(self, instance: InstanceReading, window_s: float) -> Sequence[VcpuStats]:
        """Sample how each VCPU spends ``window_s`` seconds; return one entry per VCPU.

        Called by :meth:`vcpu_stats` with a ``running`` instance and a
        checked, positive ``window_s``; it blocks for about that long.
        Returns :class:`VcpuStats` whose fractions are of the window, never
        a reading. Raises ``InstanceNotFound`` when the instance is gone,
        and the hypervisor errors. A driver that implements
        :meth:`_vcpu_counters` need not implement it: by default it reads
        those counters twice, ``window_s`` apart.
        """
        first = self._vcpu_counters(instance)
        time.sleep(window_s)
        return stats_between(first, self._vcpu_counters(instance), window_s)

    def _vcpu_counters(self, instance: InstanceReading) -> InstanceVcpuCounters:
        """Read the instance's cumulative VCPU counters now.

        Called by the default :meth:`_vcpu_stats` (so by :meth:`vcpu_stats`)
        with a ``running`` instance, at the start and the end of the
        window. Returns a :class:`powerdrivers.InstanceVcpuCounters` whose
        ``taken_at_s`` is the :func:`time.monotonic` of the reading, and
        ``None`` in the counters the hypervisor does not keep, never a
        made-up 0. Raises ``InstanceNotFound`` when the instance is gone,
        and the hypervisor errors.
        """
        raise UnsupportedOperation(self.name, "vcpu_stats")

    def _all_vcpu_counters(self) -> Iterable[InstanceVcpuCounters]:
        """Read the cumulative VCPU counters of every running instance, in one hypervisor round trip.

        Called by :meth:`vcpu_counters` (so by each
        :meth:`powerdrivers.VcpuSampler.sample`). Returns what
        :meth:`_vcpu_counters` returns, for each instance running when
        read; one that stops meanwhile may be left out. Raises the
        hypervisor errors; a driver that cannot read them all at once
        leaves it unimplemented (``UnsupportedOperation``).
        """
        raise UnsupportedOperation(self.name, "vcpu_counters")

    def _start_native_events(self) -> None:
        """Start the native event source, and return promptly: it must not block.

        Called on the thread of the first :meth:`subscribe`, which waits for
        it: start a thread of the driver's own (or register the hypervisor
        library's callbacks) and return. The source then reports what
        changes through :attr:`event_reporter`, from that thread; it need
        not filter unchanged readings (``report_change`` drops them). Start
        and stop are never called concurrently. Raising fails the
        ``subscribe`` with the error (a :class:`powerdrivers.PowerDriversError`).
        """
        raise UnsupportedOperation(self.name, "native_events")

    def _stop_native_events(self) -> None:
        """Stop the native event source; events reported afterwards are dropped anyway.

        Called when the last listener leaves or the driver closes, possibly
        on the source's own thread (a listener that unsubscribes from its
        callback): never join the current thread. Should not raise.
        """

    def _close(self) -> None:
        """Release the hypervisor connection; the default does nothing.

        Called once, by the first :meth:`close`, after the event source
        stopped. Returns nothing; should raise nothing (release what it
        can and log the rest), since :meth:`close` passes on what it raises.
        """
