"""What to spawn: a small, hypervisor-neutral instance specification."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple, Self

from powerdrivers._exceptions import InvalidSpec

# Compiled by re on first use, not on import (see _secrets).
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


class _SpecFields(NamedTuple):
    name: str
    vcpus: int
    memory_mib: int
    kernel: Path | None
    initrd: Path | None
    cmdline: str | None
    disk_image: Path | None
    metadata: Mapping[str, str]


class InstanceSpec(_SpecFields):
    """The instance ``Driver.spawn`` creates and starts.

    Either boot a kernel directly (``kernel``, optional ``initrd`` and
    ``cmdline``) or a ``disk_image``; drivers that need neither (the fake)
    ignore both. ``metadata`` is free-form and driver-specific. Immutable;
    an invalid combination raises :class:`InvalidSpec`.
    """

    __slots__ = ()

    def __new__(
        cls,
        name: str,
        vcpus: int = 1,
        memory_mib: int = 256,
        kernel: Path | None = None,
        initrd: Path | None = None,
        cmdline: str | None = None,
        disk_image: Path | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Self:
        if not re.fullmatch(_NAME, name):
            raise InvalidSpec(
                f"instance name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if vcpus < 1:
            raise InvalidSpec(f"vcpus must be at least 1, not {vcpus}")
        if memory_mib < 16:
            raise InvalidSpec(f"memory_mib must be at least 16, not {memory_mib}")
        if kernel is not None and disk_image is not None:
            raise InvalidSpec("give a kernel or a disk image, not both")
        if kernel is None and (initrd is not None or cmdline is not None):
            raise InvalidSpec("initrd and cmdline need a kernel")
        frozen = MappingProxyType(dict(metadata or {}))
        return super().__new__(cls, name, vcpus, memory_mib, kernel, initrd, cmdline, disk_image, frozen)
