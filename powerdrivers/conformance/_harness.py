"""Calling a driver under test: no untyped exception may escape, and states can be arranged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from powerdrivers._capabilities import Capability
from powerdrivers._driver import Driver
from powerdrivers._exceptions import PowerDriversError
from powerdrivers._states import PowerState

_T = TypeVar("_T")


def guarded(what: str, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run ``call``; an exception outside the powerdrivers hierarchy fails the test, saying so.

    Typed errors pass through for the test to inspect.
    """
    try:
        return call(*args, **kwargs)
    except PowerDriversError:
        raise
    except NotImplementedError as error:
        pytest.fail(
            f"{what} raised NotImplementedError ({error}); a feature the driver does not declare must "
            "raise powerdrivers.UnsupportedOperation, and a declared one must work",
            pytrace=False,
        )
    except Exception as error:
        pytest.fail(untyped(what, error), pytrace=False)


def untyped(what: str, error: Exception) -> str:
    """Say that ``what`` let ``error``, outside the powerdrivers hierarchy, escape."""
    return (
        f"{what} let an untyped {type(error).__module__}.{type(error).__qualname__} escape: {error}; "
        "drivers must translate every native error into the powerdrivers hierarchy"
    )


def reachable_states(capabilities: frozenset[Capability]) -> list[PowerState]:
    """Return the states the kit can put an instance in with these capabilities."""
    states = [PowerState.RUNNING, PowerState.SHUTOFF]
    if Capability.PAUSE in capabilities:
        states.append(PowerState.PAUSED)
    if Capability.SUSPEND in capabilities:
        states.append(PowerState.SUSPENDED)
    return states


def _direct(what: str, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    return call(*args, **kwargs)


def steer(driver: Driver, ref: str, target: PowerState, call: Callable[..., Any] = _direct) -> PowerState:
    """Move instance ``ref`` towards ``target`` with declared operations and return where it ends.

    Each driver call goes through ``call(what, function, *args)``: :func:`guarded`
    inside a check; by default the call itself, so a driver's error propagates.
    """
    for _ in range(4):
        state: PowerState = call("get_instance", driver.get_instance, ref).power_state
        if state is target:
            return state
        if target is PowerState.SHUTOFF:
            if state is PowerState.SUSPENDED:
                call("start", driver.start, ref)
            else:
                call("power_off", driver.power_off, ref)
        elif state is PowerState.PAUSED:
            call("unpause", driver.unpause, ref)
        elif state is PowerState.SUSPENDED:
            call("resume", driver.resume, ref)
        elif state in (PowerState.SHUTOFF, PowerState.CRASHED):
            call("start", driver.start, ref)
        elif target is PowerState.PAUSED:
            call("pause", driver.pause, ref)
        elif target is PowerState.SUSPENDED:
            call("suspend", driver.suspend, ref)
        else:
            call("power_off", driver.power_off, ref)
    final: PowerState = call("get_instance", driver.get_instance, ref).power_state
    return final


def bring_to(driver: Driver, ref: str, target: PowerState) -> None:
    """Put instance ``ref`` in ``target`` using declared operations, or fail saying which step failed."""
    final = steer(driver, ref, target, guarded)
    if final is not target:
        pytest.fail(f"could not bring {ref!r} to {target.value} (it is {final.value})", pytrace=False)
