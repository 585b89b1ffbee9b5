"""Parsing the fake driver's options: what it seeds and what it injects."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from powerdrivers import (
    MAX_DURATION_S,
    AuthenticationError,
    HypervisorConnectionError,
    HypervisorError,
    InvalidOption,
    Operation,
    OperationTimeout,
    PowerDriversError,
    Secret,
    parse_count,
    parse_duration,
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

#: The longest delay ``latency`` adds to a call: a slower fake is a typing mistake.
MAX_LATENCY_S: Final = 60.0
#: The longest a guest may take to shut down or reboot, and the longest poll interval.
MAX_GUEST_DELAY_S: Final = 3600.0
MAX_POLL_INTERVAL_S: Final = 60.0
#: The most generated instances a new state may start with (each costs memory, and a file write).
MAX_INSTANCES: Final = 100_000


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
        crash_after=parse_duration("crash_after", values.get("crash_after", 2.0), maximum=MAX_DURATION_S),
        guest_delay=parse_duration("guest_delay", values.get("guest_delay", 0.5), maximum=MAX_GUEST_DELAY_S),
        seed=seed,
        instances=parse_count("instances", values.get("instances", 0), maximum=MAX_INSTANCES),
        poll_interval=parse_duration(
            "poll_interval", values.get("poll_interval", 0.05), positive=True, maximum=MAX_POLL_INTERVAL_S
        ),
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


def _latency(value: object) -> Latency:
    """Parse a fixed delay (``0.05``) or a range (``0.01-0.2``), each bound at most a minute."""
    low, sep, high = value.partition("-") if isinstance(value, str) else ("", "", "")
    # A leading sign or an exponent ("1e-05") is one number, not a range.
    if not sep or not low.strip() or low.strip()[-1] in "eE":
        fixed = _delay(value)
        return Latency(fixed, fixed)
    return latency_between(low, high, shown=value)


def latency_between(low: object, high: object, *, shown: object = None) -> Latency:
    """Return the latency uniform in ``low..high``, each bound checked as ``latency`` is."""
    bounds = _delay(low), _delay(high)
    if bounds[0] > bounds[1]:
        text = shown if shown is not None else f"{low}-{high}"
        raise InvalidOption(f"latency range {text!r} has its bounds reversed")
    return Latency(*bounds)


def _delay(value: object) -> float:
    return parse_duration("latency", value, maximum=MAX_LATENCY_S)
