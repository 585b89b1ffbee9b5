"""What to spawn: a small, hypervisor-neutral instance specification."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from powerdrivers._exceptions import InvalidSpec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class InstanceSpec:
    """The instance ``Driver.spawn`` creates and starts.

    Either boot a kernel directly (``kernel``, optional ``initrd`` and
    ``cmdline``) or a ``disk_image``; drivers that need neither (the fake)
    ignore both. ``metadata`` is free-form and driver-specific.
    """

    name: str
    vcpus: int = 1
    memory_mib: int = 256
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    disk_image: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidSpec(
                f"instance name {self.name!r} must be 1-63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if self.vcpus < 1:
            raise InvalidSpec(f"vcpus must be at least 1, not {self.vcpus}")
        if self.memory_mib < 16:
            raise InvalidSpec(f"memory_mib must be at least 16, not {self.memory_mib}")
        if self.kernel is not None and self.disk_image is not None:
            raise InvalidSpec("give a kernel or a disk image, not both")
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            raise InvalidSpec("initrd and cmdline need a kernel")
