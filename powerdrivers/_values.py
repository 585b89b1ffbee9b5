"""Checking the numbers, durations, counts and flags a caller hands a driver.

One validator for every input that is a number: the CLI's flags, the core's
parameters (``timeout``, ``window``...) and every plugin's options. Each
accepts what a person types (``"2.5"``, ``"yes"``) or what code passes
(``2.5``, ``True``), and rejects, with one :class:`InvalidOption` (or the
``error`` class given) naming the option, anything that is not finite, is
out of its bounds, or is of the wrong type. A bound exists for every value:
an unbounded number is a hang or an ``OverflowError`` waiting to happen.
"""

from __future__ import annotations

import math
from typing import Final

from powerdrivers._exceptions import ConfigurationError, InvalidOption

#: The longest duration anything accepts: a week. Longer waits are typing mistakes, and
#: ``threading`` rejects (with ``OverflowError``) timeouts past about 292 years.
MAX_DURATION_S: Final = 7 * 24 * 3600.0
#: The largest count anything accepts unless it names a smaller bound.
MAX_COUNT: Final = 1_000_000

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def parse_number(
    option: str,
    value: object,
    *,
    minimum: float,
    maximum: float,
    error: type[ConfigurationError] = InvalidOption,
    unit: str = "",
) -> float:
    """Return ``value`` as a finite float within ``minimum..maximum`` inclusive.

    Accepts ints, floats and their text (surrounding space allowed); rejects
    booleans, NaN, infinities and anything out of bounds with ``error``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise error(f"{option} must be a number{unit and ' of' + unit}, not {_shown(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise error(f"{option} must be a number{unit and ' of' + unit}, not {_shown(value)}") from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise error(
            f"{option} must be from {_plain(minimum)} to {_plain(maximum)}{unit}, not {_shown(value)}"
        )
    return number


def parse_duration(
    option: str,
    value: object,
    *,
    positive: bool = False,
    maximum: float = MAX_DURATION_S,
    error: type[ConfigurationError] = InvalidOption,
) -> float:
    """Return ``value`` as seconds: finite, 0 or more (more than 0 if ``positive``), at most ``maximum``."""
    seconds = parse_number(option, value, minimum=0.0, maximum=maximum, error=error, unit=" seconds")
    if positive and seconds == 0:
        raise error(f"{option} must be more than 0 seconds, not {_shown(value)}")
    # A duration shorter than the clock can resolve is a typing mistake, not a wish for no wait.
    if 0 < seconds < 1e-6:
        raise error(f"{option} must be 0 or at least a microsecond, not {_shown(value)}")
    return seconds


def parse_count(
    option: str,
    value: object,
    *,
    minimum: int = 0,
    maximum: int = MAX_COUNT,
    error: type[ConfigurationError] = InvalidOption,
) -> int:
    """Return ``value`` as a whole number within ``minimum..maximum`` inclusive.

    Accepts ints and decimal digits (surrounding space allowed); rejects
    booleans, fractions, signs and text such as ``"2**40"`` or ``"1e3"``.
    """
    if isinstance(value, bool):
        raise error(f"{option} must be a whole number, not {_shown(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        text = value.strip()
        # Compare lengths first: int() of a huge digit string is itself slow.
        if len(text) > len(str(maximum)) + 1:
            raise error(f"{option} must be from {minimum} to {maximum}, not {_shown(value)}")
        number = int(text)
    else:
        raise error(f"{option} must be a whole number, not {_shown(value)}")
    if not minimum <= number <= maximum:
        raise error(f"{option} must be from {minimum} to {maximum}, not {_shown(value)}")
    return number


def parse_boolean(option: str, value: object, *, error: type[ConfigurationError] = InvalidOption) -> bool:
    """Return ``value`` as a flag: a bool, or one of 1/0, true/false, yes/no, on/off (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise error(f"{option} must be true or false (yes/no, on/off, 1/0), not {_shown(value)}")


def _shown(value: object) -> str:
    """Show the value in a message: short, one line, never a huge conversion."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a number that large"
    text = repr(value) if isinstance(value, (str, int, float)) else f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
