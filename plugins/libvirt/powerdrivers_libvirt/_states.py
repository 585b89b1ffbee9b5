"""Every libvirt domain state and reason, and its canonical meaning.

Native values are named after libvirt's constants, lower-cased and without
their prefix: state ``VIR_DOMAIN_SHUTDOWN`` is ``"shutdown"`` and reason
``VIR_DOMAIN_SHUTDOWN_USER`` is ``"user"``. One reason is the driver's own:
a shut-off domain with a managed-save image reports reason
``"managed_save"`` (libvirt says ``"saved"``), because starting it restores
memory rather than booting, which is what SUSPENDED means.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

import libvirt

from powerdrivers import NativeMapping, NativeStateTable, PowerState, Transition

_R = PowerState.RUNNING
_P = PowerState.PAUSED

#: libvirt state constant name -> the native state name readings carry.
STATES: Mapping[str, str] = MappingProxyType(
    {
        "VIR_DOMAIN_NOSTATE": "nostate",
        "VIR_DOMAIN_RUNNING": "running",
        "VIR_DOMAIN_BLOCKED": "blocked",
        "VIR_DOMAIN_PAUSED": "paused",
        "VIR_DOMAIN_SHUTDOWN": "shutdown",
        "VIR_DOMAIN_SHUTOFF": "shutoff",
        "VIR_DOMAIN_CRASHED": "crashed",
        "VIR_DOMAIN_PMSUSPENDED": "pmsuspended",
    }
)

#: Constants that share a state's prefix but are not its reasons (they are
#: flags of virDomainShutdownFlags, or the reason enum of another state).
NOT_REASONS = frozenset(
    {
        "VIR_DOMAIN_SHUTDOWN_DEFAULT",
        "VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN",
        "VIR_DOMAIN_SHUTDOWN_GUEST_AGENT",
        "VIR_DOMAIN_SHUTDOWN_INITCTL",
        "VIR_DOMAIN_SHUTDOWN_SIGNAL",
        "VIR_DOMAIN_SHUTDOWN_PARAVIRT",
        "VIR_DOMAIN_PMSUSPENDED_DISK_UNKNOWN",
    }
)

MANAGED_SAVE = "managed_save"

#: The shut-off reasons under which a domain is read as having a managed-save
#: image, if it has one: shut off by a save, or for a reason libvirt forgot
#: across a daemon restart. Listings and single reads apply the same rule.
MAYBE_SAVED_REASONS = frozenset({libvirt.VIR_DOMAIN_SHUTOFF_SAVED, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN})


def _rows() -> list[NativeMapping]:
    rows = [
        NativeMapping("nostate", "unknown", PowerState.UNKNOWN, None, "libvirt itself does not know."),
        NativeMapping(
            "blocked",
            "unknown",
            _R,
            None,
            "BLOCKED says some VCPU waits on a resource this millisecond: a statistic, not a state "
            "(see vcpu_stats). The domain holds its resources and runs.",
        ),
        NativeMapping(
            "shutdown",
            "unknown",
            _R,
            Transition.SHUTTING_DOWN,
            "libvirt's 'being shut down': the guest was asked and is shutting down, but the domain "
            "still runs. It is not off until libvirt says shutoff.",
        ),
        NativeMapping("shutdown", "user", _R, Transition.SHUTTING_DOWN, "As above, the user asked."),
        NativeMapping(
            "crashed", "unknown", PowerState.CRASHED, None, "Stopped by a crash, kept (on_crash=preserve)."
        ),
        NativeMapping(
            "crashed", "panicked", PowerState.CRASHED, None, "The guest panicked; the domain is kept."
        ),
        NativeMapping(
            "pmsuspended",
            "unknown",
            PowerState.SUSPENDED,
            None,
            "The guest suspended itself through its own power management (S3/S4); no VCPU runs and "
            "a wakeup resumes it.",
        ),
    ]
    for reason in (
        "unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused", "migration_canceled",
        "save_canceled", "wakeup", "postcopy", "postcopy_failed",
    ):  # fmt: skip
        rows.append(NativeMapping("running", reason, _R, None, "The domain runs."))
    rows.append(
        NativeMapping(
            "running",
            "crashed",
            _R,
            None,
            "The guest crashed but the hypervisor keeps running it; the reason keeps the fact.",
        )
    )
    for reason in (
        "unknown", "user", "migration", "dump", "ioerror", "watchdog", "from_snapshot", "snapshot",
        "postcopy", "postcopy_failed", "api_error",
    ):  # fmt: skip
        rows.append(NativeMapping("paused", reason, _P, None, "VCPUs are not scheduled; memory stays."))
    rows += [
        NativeMapping("paused", "save", _P, Transition.SUSPENDING, "Paused while its memory is being saved."),
        NativeMapping("paused", "shutting_down", _P, Transition.SHUTTING_DOWN, "Paused on its way down."),
        NativeMapping(
            "paused", "starting_up", _P, Transition.POWERING_ON, "Paused while it is being started."
        ),
        NativeMapping(
            "paused",
            "crashed",
            PowerState.CRASHED,
            None,
            "Paused by the hypervisor because the guest crashed, and kept: crashed.",
        ),
    ]
    for reason in (
        "unknown", "shutdown", "migrated", "saved", "failed", "from_snapshot", "daemon",
    ):  # fmt: skip
        rows.append(NativeMapping("shutoff", reason, PowerState.SHUTOFF, None, "No resources held."))
    rows += [
        NativeMapping(
            "shutoff",
            "destroyed",
            PowerState.SHUTOFF,
            None,
            "Stopped by virDomainDestroy, without the guest: off, and a shutdown that finds it so "
            "was forced.",
            forced=True,
        ),
        NativeMapping(
            "shutoff",
            "crashed",
            PowerState.SHUTOFF,
            None,
            "Stopped because it crashed (on_crash=destroy): it holds nothing, so it is off; the "
            "reason keeps why.",
        ),
        NativeMapping(
            "shutoff",
            MANAGED_SAVE,
            PowerState.SUSPENDED,
            None,
            "Off, with a managed-save image: starting it restores memory, exactly as a Xen "
            "'Suspended' VM resumes. So managed save and Xen suspend read alike.",
        ),
    ]
    return rows


NATIVE_STATES = NativeStateTable("libvirt", _rows())


@functools.cache
def libvirt_names() -> tuple[str, ...]:
    """Return the names the installed libvirt module defines (scanned once, when first needed)."""
    return tuple(dir(libvirt))


def reason_constants(state_constant: str) -> list[str]:
    """Return the installed libvirt's reason constants for a state constant."""
    prefix = state_constant + "_"
    return sorted(name for name in libvirt_names() if name.startswith(prefix) and name not in NOT_REASONS)


@functools.cache
def _code_names() -> tuple[dict[int, str], dict[int, dict[int, str]]]:
    states = {
        getattr(libvirt, constant): name for constant, name in STATES.items() if hasattr(libvirt, constant)
    }
    reasons = {
        getattr(libvirt, constant): {
            getattr(libvirt, name): name.removeprefix(constant + "_").lower()
            for name in reason_constants(constant)
        }
        for constant in STATES
        if hasattr(libvirt, constant)
    }
    return states, reasons


def native_names(state: int, reason: int) -> tuple[str, str]:
    """Return the native (state, reason) names for libvirt's numeric codes.

    Codes this libvirt does not define come back as their numbers, which
    the table does not know, so the reading is UNKNOWN with the raw values
    kept.
    """
    states, reasons = _code_names()
    return states.get(state, str(state)), reasons.get(state, {}).get(reason, str(reason))
