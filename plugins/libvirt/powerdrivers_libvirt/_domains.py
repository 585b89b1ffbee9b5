"""What the driver's operations do to one libvirt domain, and how a failed one is judged."""

from __future__ import annotations

from collections.abc import Callable

import libvirt

from powerdrivers import InstanceReading, Operation, check_operation, rule_for
from powerdrivers_libvirt._errors import code_name
from powerdrivers_libvirt._states import MAYBE_SAVED_REASONS

_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF


def bring_up(domain: libvirt.virDomain) -> None:
    """Run a domain that is off, crashed, suspended by managed save or by the guest."""
    state = domain.state()[0]
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        domain.pMWakeup(0)
    elif state == libvirt.VIR_DOMAIN_CRASHED:
        power_cycle(domain)
    else:
        # create() also restores a managed-save image, which is how SUSPENDED starts.
        domain.create()


def power_cycle(domain: libvirt.virDomain) -> None:
    """Destroy the domain if it is active, and start it."""
    if domain.isActive():
        domain.destroy()
    domain.create()


def reset(domain: libvirt.virDomain) -> bool:
    """Reset the domain without asking the guest, leaving it running.

    Returns whether it was reset in place (QEMU reports that as REBOOT
    events), false when it was stopped and started instead.
    """
    if domain.state()[0] == libvirt.VIR_DOMAIN_CRASHED:
        # A crashed domain is kept for inspection; a reset cannot revive it.
        power_cycle(domain)
        return False
    try:
        domain.reset(0)
    except libvirt.libvirtError as error:
        if code_name(error) not in ("VIR_ERR_NO_SUPPORT", "VIR_ERR_OPERATION_UNSUPPORTED"):
            raise
        power_cycle(domain)
        return False
    # A reset keeps a paused domain paused; the table promises it running.
    if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        domain.resume()
    return True


def remove(domain: libvirt.virDomain) -> None:
    """Destroy the domain if it runs, then undefine it with its managed-save image and metadata."""
    if domain.isActive():
        domain.destroy()
    if not domain.isPersistent():
        return
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    try:
        domain.undefineFlags(flags)
    except libvirt.libvirtError as error:
        if code_name(error) not in ("VIR_ERR_NO_SUPPORT", "VIR_ERR_INVALID_ARG"):
            raise
        if domain.hasManagedSaveImage(0):
            domain.managedSaveRemove(0)
        domain.undefine()


def lost_race(
    domain: libvirt.virDomain,
    instance: InstanceReading,
    operation: Operation,
    reading_of: Callable[[int, int, bool], InstanceReading],
    own_operation: Operation | None,
) -> bool:
    """After ``operation`` failed on ``domain``, whether another caller's change explains it.

    Two callers can both find a domain shut off and both start it; the
    loser's error (libvirt's test driver calls it an internal error, QEMU an
    invalid operation) is an invalid transition, which the domain's state
    now shows. Raises ``InvalidStateTransition`` when that state forbids
    the operation; returns True when ``own_operation``, the one the calling
    thread carries out, has reached its goal anyway (a shutdown's forced
    power-off finding the domain off); False when the state allows the
    operation, so the error stands.
    """
    try:
        state, reason = domain.state()
        managed = state == _SHUTOFF and reason in MAYBE_SAVED_REASONS and domain.hasManagedSaveImage(0)
    except libvirt.libvirtError:
        return False
    now = reading_of(state, reason, bool(managed))
    if own_operation is not None and now.power_state in rule_for(own_operation).already_done_in:
        return True
    return not check_operation(instance.name, operation, now.power_state, now.transition)
