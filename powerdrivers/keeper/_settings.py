"""The keeper's settings: one small value, every number checked by the core's validators."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from powerdrivers import InvalidOption, parse_count, parse_duration, parse_number


def default_identity() -> str:
    """Name this keeper process in history records and actions: ``keeper@HOST:PID``."""
    return f"keeper@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class KeeperSettings:
    """How often the keeper looks, how long it waits and when it gives up.

    Build it with :meth:`from_options` from text or numbers; constructing it directly skips
    the checks. Defaults follow KubeVirt (backoff) and Ironic (quarantine after 3 failures).
    """

    resync_interval: float = 60.0
    """Seconds between full resyncs of a host (one ``list_instances()`` call each)."""
    reboot_window: float = 2.0
    """Seconds an unexplained clean stop under ``always`` waits for the start of a guest reboot."""
    backoff_base: float = 10.0
    """Crash-loop backoff unit: the delay is ``base * (failures - 1) ** 2`` seconds."""
    backoff_cap: float = 300.0
    """The longest crash-loop backoff, jitter included (KubeVirt: 5 minutes)."""
    backoff_jitter: float = 0.5
    """Fraction of the delay added at random (0 to this), so crash loops do not align."""
    stable_after: float = 60.0
    """Seconds running without a crash after which the failure count starts again from zero."""
    quarantine_after: int = 3
    """Consecutive failed actions after which the instance is quarantined."""
    poll_interval: float = 1.0
    """Seconds between looks at the store for other processes' policy changes and requests."""
    action_timeout: float = 120.0
    """Seconds a graceful shutdown the keeper issues waits for the guest before forcing."""
    identity: str = ""
    """Who this keeper is in actions and history; empty means ``keeper@HOST:PID``."""

    @classmethod
    def from_options(cls, **options: Any) -> KeeperSettings:
        """Check ``options`` (names as the fields) and return the settings.

        Raises ``InvalidOption`` naming the option for an unknown name or a bad value.
        """
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidOption(f"unknown keeper setting(s): {', '.join(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in options.items():
            if name == "quarantine_after":
                checked[name] = parse_count(name, value, minimum=1, maximum=1000)
            elif name == "backoff_jitter":
                checked[name] = parse_number(name, value, minimum=0.0, maximum=1.0)
            elif name == "identity":
                checked[name] = check_identity(name, value)
            else:
                positive = name in ("resync_interval", "poll_interval", "action_timeout")
                checked[name] = parse_duration(name, value, positive=positive)
        settings = cls(**checked)
        if settings.backoff_base > settings.backoff_cap:
            raise InvalidOption(
                f"backoff_base ({settings.backoff_base:g} s) must not exceed "
                f"backoff_cap ({settings.backoff_cap:g} s)"
            )
        return settings

    @property
    def who(self) -> str:
        """The identity written into actions and history."""
        return self.identity or default_identity()


def check_identity(label: str, value: object) -> str:
    """Return a name (a keeper's, a host's, a requester's) checked: printable text, 1 to 200 characters.

    Raises ``InvalidOption`` naming ``label``.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 200 or not value.isprintable():
        raise InvalidOption(f"{label} must be printable text of 1 to 200 characters")
    return value.strip()
