"""Parsing the fake driver's options: what it seeds and what it injects."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from powerdrivers import (
    AuthenticationError,
    HypervisorConnectionError,
    HypervisorError,
    InvalidOption,
    Operation,
    OperationTimeout,
    PowerDriversError,
    Secret,
)

#: Error names accepted by the failure-injection options, and what they raise.
ERRORS: Mapping[str, type[PowerDriversError]] = {
    "hypervisor": HypervisorError,
    "timeout": OperationTimeout,
    "connection": HypervisorConnectionError,
    "authentication": AuthenticationError,
}

#: Calls a named failure can target: every operation, plus reads and statistics.
TARGETS = frozenset({op.value for op in Operation} | {"read", "vcpu_stats"})

_SIMPLE = {
    "latency",
    "fail_next",
    "fail_connect",
    "uncooperative",
    "crash",
    "crash_after",
    "guest_delay",
    "seed",
    "instances",
    "username",
    "password",
    "poll_interval",
}
ACCEPTED = frozenset(_SIMPLE | {f"fail_{target}" for target in TARGETS})


def make_error(name: str, message: str) -> PowerDriversError:
    """Build the exception an injected failure named ``name`` raises."""
    error_class = ERRORS[name]
    if error_class is HypervisorError:
        return HypervisorError(message, code="injected")
    return error_class(message)


@dataclass(frozen=True)
class Latency:
    """A delay added to every hypervisor call: fixed, or uniform in a range."""

    low: float = 0.0
    high: float = 0.0

    def sample(self) -> float:
        """Return this call's delay in seconds."""
        return self.low if self.low == self.high else random.uniform(self.low, self.high)


@dataclass(frozen=True)
class FakeOptions:
    """The fake driver's options, validated."""

    latency: Latency = Latency()
    fail_next: str | None = None
    fail_connect: str | None = None
    fail_on: Mapping[str, str] = field(default_factory=dict)
    uncooperative: frozenset[str] = frozenset()
    crash: frozenset[str] = frozenset()
    crash_after: float = 2.0
    guest_delay: float = 0.5
    seed: str = "demo"
    instances: int = 0
    poll_interval: float = 0.05


def parse_options(options: Mapping[str, object]) -> FakeOptions:
    """Validate ``options`` (strings from a CLI or typed values) into :class:`FakeOptions`."""
    unknown = sorted(set(options) - ACCEPTED)
    if unknown:
        raise InvalidOption(
            f"the fake driver has no option {', '.join(unknown)}; accepted: latency, fail_next, "
            "fail_connect, fail_<operation>, uncooperative, crash, crash_after, guest_delay, seed, "
            "instances, poll_interval, username, password"
        )
    values = {key: value for key, value in options.items() if not isinstance(value, Secret)}
    fail_on = {
        key.removeprefix("fail_"): _error_name(key, value)
        for key, value in values.items()
        if key.startswith("fail_") and key.removeprefix("fail_") in TARGETS
    }
    seed = str(values.get("seed", "demo"))
    if seed not in ("demo", "empty"):
        raise InvalidOption(f"seed must be 'demo' or 'empty', not {seed!r}")
    return FakeOptions(
        latency=_latency(values.get("latency", "0")),
        fail_next=_error_name("fail_next", values["fail_next"]) if "fail_next" in values else None,
        fail_connect=_error_name("fail_connect", values["fail_connect"])
        if "fail_connect" in values
        else None,
        fail_on=fail_on,
        uncooperative=_names(values.get("uncooperative", "")),
        crash=_names(values.get("crash", "")),
        crash_after=_seconds("crash_after", values.get("crash_after", 2.0)),
        guest_delay=_seconds("guest_delay", values.get("guest_delay", 0.5)),
        seed=seed,
        instances=_count("instances", values.get("instances", 0)),
        poll_interval=_seconds("poll_interval", values.get("poll_interval", 0.05), positive=True),
    )


def _error_name(option: str, value: object) -> str:
    name = str(value)
    if name not in ERRORS:
        raise InvalidOption(f"{option}: unknown error {name!r}; one of {', '.join(sorted(ERRORS))}")
    return name


def _names(value: object) -> frozenset[str]:
    if isinstance(value, (set, frozenset, list, tuple)):
        return frozenset(str(item) for item in value)
    return frozenset(item.strip() for item in str(value).split(",") if item.strip())


def _seconds(option: str, value: object, *, positive: bool = False) -> float:
    try:
        seconds = float(str(value))
    except ValueError:
        raise InvalidOption(f"{option} must be a number of seconds, not {value!r}") from None
    if seconds < 0 or (positive and seconds == 0) or not math.isfinite(seconds):
        raise InvalidOption(
            f"{option} must be a finite number of seconds, {'more than' if positive else 'at least'} 0, "
            f"not {value!r}"
        )
    return seconds


def _count(option: str, value: object) -> int:
    text = str(value)
    if not text.isdigit():
        raise InvalidOption(f"{option} must be a whole number, not {value!r}")
    return int(text)


def _latency(value: object) -> Latency:
    text = str(value)
    low, sep, high = text.partition("-")
    if not sep:
        fixed = _seconds("latency", low)
        return Latency(fixed, fixed)
    bounds = _seconds("latency", low), _seconds("latency", high)
    if bounds[0] > bounds[1]:
        raise InvalidOption(f"latency range {text!r} has its bounds reversed")
    return Latency(*bounds)
