"""The driver-interface version and the compatibility rule."""

from __future__ import annotations

#: The driver-interface version this core implements, ``MAJOR.MINOR``.
#: MINOR grows when the interface gains something a driver may use;
#: MAJOR grows when a driver written for the old interface could break.
#: 1.1 added ``NO_REASON`` rows, the ``EventReporter`` (``Driver.event_reporter``),
#: ``Driver.reports_resets``, ``_vcpu_counters``/``_all_vcpu_counters`` and the
#: optional ``VcpuStats`` fields.
INTERFACE_VERSION = "1.1"

SUPPORTED_INTERFACE_RANGE = f">={INTERFACE_VERSION.split('.', maxsplit=1)[0]}.0, <={INTERFACE_VERSION}"


def parse_interface_version(text: str) -> tuple[int, int]:
    """Parse ``MAJOR.MINOR``; raise ``ValueError`` on anything else."""
    major, sep, minor = text.partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        raise ValueError(f"interface version {text!r} is not MAJOR.MINOR")
    return int(major), int(minor)


def is_compatible(declared: str) -> bool:
    """Whether a driver written for interface ``declared`` runs on this core.

    Same major version, and a minor version no newer than the core's: a
    driver may not rely on features this core does not have.
    """
    major, minor = parse_interface_version(declared)
    core_major, core_minor = parse_interface_version(INTERFACE_VERSION)
    return major == core_major and minor <= core_minor
