"""Crash-loop backoff, as KubeVirt does it: the wait grows with the square of consecutive failures.

The first failure is restarted at once; the n-th waits ``base * (n - 1) ** 2`` seconds plus up
to ``jitter`` of that at random, never more than ``cap``. A run that outlasts ``stable_after``
without failing starts the count again.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from powerdrivers.keeper._settings import KeeperSettings


def backoff_delay(failures: int, settings: KeeperSettings, draw: float) -> float:
    """Return the seconds to wait before acting after ``failures`` consecutive failures.

    ``draw`` is a number in ``[0, 1)`` (the jitter's random part, given so the result is
    testable). No wait for 0 or 1 failure; never more than ``settings.backoff_cap``.
    """
    if failures <= 1:
        return 0.0
    delay = settings.backoff_base * (failures - 1) ** 2
    delay += delay * settings.backoff_jitter * draw
    return min(delay, settings.backoff_cap)


def backoff_until(
    failures: int, now: datetime, settings: KeeperSettings, rng: random.Random | None = None
) -> datetime | None:
    """Return when the backoff after ``failures`` ends, or ``None`` when there is none."""
    delay = backoff_delay(failures, settings, (rng or random).random())
    return now + timedelta(seconds=delay) if delay > 0 else None


def consecutive_failures(
    previous: int, running_since: datetime | None, now: datetime, settings: KeeperSettings
) -> int:
    """Return the failure count after one more failure at ``now``.

    ``running_since`` is when the instance was last seen start running (``None`` when it was
    not running): a run of at least ``stable_after`` seconds means the earlier failures were
    not a loop, so the count starts again at 1.
    """
    if running_since is not None and (now - running_since).total_seconds() >= settings.stable_after:
        return 1
    return previous + 1
