"""The keeper's settings: one small value, every number checked by the core's validators."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Final

from powerdrivers import InvalidOption, parse_count, parse_duration, parse_number

#: The shortest VCPU sampling interval (a shorter one would only measure the sampling itself).
MIN_VCPU_SAMPLE_INTERVAL: Final = 0.01

#: The longest VCPU retention: a year (the samples-per-VCPU bound usually binds first).
MAX_VCPU_RETENTION: Final = 366 * 86400.0

#: The most samples kept per VCPU: ``vcpu_retention / vcpu_sample_interval`` may not exceed it.
MAX_VCPU_SAMPLES_KEPT: Final = 100_000


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
    vcpu_sample_interval: float = 15.0
    """Seconds between VCPU samples of a host's running instances; 0 turns sampling off."""
    vcpu_retention: float = 86400.0
    """Seconds VCPU samples are kept in the store; older ones are deleted."""

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
            elif name == "vcpu_retention":
                checked[name] = parse_duration(name, value, positive=True, maximum=MAX_VCPU_RETENTION)
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
        _check_vcpu_sampling(settings.vcpu_sample_interval, settings.vcpu_retention)
        return settings

    @property
    def who(self) -> str:
        """The identity written into actions and history."""
        return self.identity or default_identity()


def _check_vcpu_sampling(interval: float, retention: float) -> None:
    """Refuse an interval too short to mean anything, or more samples kept per VCPU than the bound."""
    if interval == 0:
        return
    if interval < MIN_VCPU_SAMPLE_INTERVAL:
        raise InvalidOption(
            f"vcpu_sample_interval must be 0 (off) or at least {MIN_VCPU_SAMPLE_INTERVAL:g} seconds, "
            f"not {interval:g}"
        )
    if retention / interval > MAX_VCPU_SAMPLES_KEPT:
        raise InvalidOption(
            f"vcpu_retention ({retention:g} s) / vcpu_sample_interval ({interval:g} s) keeps "
            f"{retention / interval:.0f} samples per VCPU, more than {MAX_VCPU_SAMPLES_KEPT:,}: "
            "lengthen the interval or shorten the retention"
        )


def check_identity(label: str, value: object) -> str:
    """Return a name (a keeper's, a host's, a requester's) checked: printable text, 1 to 200 characters.

    Raises ``InvalidOption`` naming ``label``.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 200 or not value.isprintable():
        raise InvalidOption(f"{label} must be printable text of 1 to 200 characters")
    return value.strip()
