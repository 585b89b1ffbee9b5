"""The faults a test injects into the fake driver's calls: latency, and errors."""

from __future__ import annotations

import time

from powerdrivers import PowerDriversError
from powerdrivers_fake._options import FakeOptions, latency_between, make_error


class Faults:
    """The latency added to every hypervisor call, and the errors injected into them.

    A call is named by its target: an :class:`~powerdrivers.Operation`,
    ``"read"`` or ``"vcpu_stats"``.
    """

    __slots__ = ("_delays", "_failures", "_latency")

    def __init__(self, settings: FakeOptions) -> None:
        self._latency = settings.latency
        self._delays = bool(settings.latency.low or settings.latency.high)
        #: (target, or None for the next call but a read; the error; whether it is removed once raised)
        self._failures: list[tuple[str | None, PowerDriversError, bool]] = []
        if settings.fail_next:
            self.add(make_error(settings.fail_next, "injected failure (fail_next)"), None, once=True)
        for target, error_name in settings.fail_on.items():
            self.add(make_error(error_name, f"injected failure of {target}"), target, once=False)

    def call(self, target: str) -> None:
        """Delay a call of ``target`` by the latency, then raise the error injected into it, if any."""
        if self._delays or self._failures:
            self._inject(target)

    def add(self, error: PowerDriversError, target: str | None, *, once: bool) -> None:
        """Make calls of ``target`` raise ``error``: the next one only if ``once``, else every one.

        ``target`` None means any call but a read.
        """
        self._failures.append((target, error, once))

    def clear(self) -> None:
        """Remove every injected error."""
        self._failures.clear()

    def set_latency(self, low: object, high: object) -> None:
        """Delay every call uniformly in ``low..high`` seconds.

        Raises :class:`~powerdrivers.InvalidOption` for bad bounds, and keeps the latency.
        """
        latency = latency_between(low, high)
        self._latency = latency
        self._delays = bool(latency.low or latency.high)

    def _inject(self, target: str) -> None:
        delay = self._latency.sample()
        if delay:
            time.sleep(delay)
        for index, (wanted, error, once) in enumerate(self._failures):
            if wanted == target or (wanted is None and target != "read"):
                if once:
                    del self._failures[index]
                raise error
