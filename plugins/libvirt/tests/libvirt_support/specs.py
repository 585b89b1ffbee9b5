"""The spawn specification of the real Linux test guest."""

from __future__ import annotations

from pathlib import Path

from powerdrivers import InstanceSpec

from .guest_image import GuestImage


def linux_guest_spec(image: GuestImage, name: str, console_log: Path) -> InstanceSpec:
    """Return the spec that boots ``image`` as ``name``, its serial console logged to ``console_log``."""
    return InstanceSpec(
        name,
        vcpus=1,
        memory_mib=256,
        kernel=image.kernel,
        initrd=image.initrd,
        cmdline=image.cmdline,
        metadata={"console_log": str(console_log)},
    )
