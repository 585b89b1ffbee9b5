"""The libvirt driver's options, each checked by the core's one validator and bounded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from powerdrivers import Driver, InvalidOption, Secret, parse_count, parse_duration

ACCEPTED: Final = frozenset(
    {"username", "password", "keepalive_interval", "keepalive_count", "reconnect_timeout", "domain_type"}
)
#: ``keepalive_interval`` value that turns keepalive off (libvirt's ``virConnectSetKeepAlive``).
KEEPALIVE_OFF: Final = -1
#: Bounds: past these a dead daemon goes unnoticed for hours, or a call hangs as long.
MAX_KEEPALIVE_INTERVAL_S: Final = 3600
MAX_KEEPALIVE_COUNT: Final = 100
MAX_RECONNECT_TIMEOUT_S: Final = 3600.0


class Options(NamedTuple):
    """The driver's options, checked."""

    username: str | None
    password: Secret | None
    #: Seconds of silence before libvirt probes the daemon, or ``KEEPALIVE_OFF``.
    keepalive_interval: int
    #: Unanswered probes in a row after which libvirt closes the connection.
    keepalive_count: int
    reconnect_timeout_s: float
    domain_type: str | None


def parse_options(options: Mapping[str, Any]) -> Options:
    """Check the driver's options; raise ``InvalidOption`` naming the first one that is wrong."""
    if "poll_interval" in options:
        raise InvalidOption(
            "the libvirt driver has no option poll_interval: it never polls, libvirt's lifecycle "
            "events report every change as it happens"
        )
    Driver._reject_unknown_options("libvirt", options, ACCEPTED)
    password = options.get("password")
    return Options(
        username=str(options["username"]) if "username" in options else None,
        password=password if isinstance(password, Secret) or password is None else Secret(str(password)),
        keepalive_interval=_keepalive_interval(options.get("keepalive_interval", 5)),
        keepalive_count=parse_count(
            "libvirt option keepalive_count",
            options.get("keepalive_count", 5),
            minimum=1,
            maximum=MAX_KEEPALIVE_COUNT,
        ),
        reconnect_timeout_s=parse_duration(
            "libvirt option reconnect_timeout",
            options.get("reconnect_timeout", 10.0),
            maximum=MAX_RECONNECT_TIMEOUT_S,
        ),
        domain_type=str(options["domain_type"]) if options.get("domain_type") else None,
    )


def _keepalive_interval(value: object) -> int:
    if value == KEEPALIVE_OFF or (isinstance(value, str) and value.strip() == str(KEEPALIVE_OFF)):
        return KEEPALIVE_OFF
    try:
        return parse_count(
            "libvirt option keepalive_interval", value, minimum=1, maximum=MAX_KEEPALIVE_INTERVAL_S
        )
    except InvalidOption as error:
        raise InvalidOption(f"{error} (whole seconds; {KEEPALIVE_OFF} turns keepalive off)") from None
