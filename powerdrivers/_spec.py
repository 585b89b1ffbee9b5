"""What to spawn: a small, hypervisor-neutral instance specification."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple, Self

from powerdrivers._exceptions import InvalidSpec
from powerdrivers._values import parse_count

#: The most VCPUs a spec may ask for: above any hypervisor's limit (KVM's is 4096 today).
MAX_VCPUS = 4096
#: The most memory a spec may ask for: 16 TiB.
MAX_MEMORY_MIB = 16 * 1024 * 1024

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
        if not isinstance(name, str) or not re.fullmatch(_NAME, name):
            raise InvalidSpec(
                f"instance name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        vcpus = parse_count("vcpus", vcpus, minimum=1, maximum=MAX_VCPUS, error=InvalidSpec)
        memory_mib = parse_count(
            "memory_mib", memory_mib, minimum=16, maximum=MAX_MEMORY_MIB, error=InvalidSpec
        )
        kernel, initrd, disk_image = (
            _path("kernel", kernel),
            _path("initrd", initrd),
            _path("disk_image", disk_image),
        )
        if cmdline is not None and (not isinstance(cmdline, str) or "\x00" in cmdline):
            raise InvalidSpec("cmdline must be text without NUL characters")
        if metadata is not None and not all(
            isinstance(key, str) and isinstance(value, str) for key, value in dict(metadata).items()
        ):
            raise InvalidSpec("metadata maps text keys to text values")
        if kernel is not None and disk_image is not None:
            raise InvalidSpec("give a kernel or a disk image, not both")
        if kernel is None and (initrd is not None or cmdline is not None):
            raise InvalidSpec("initrd and cmdline need a kernel")
        frozen = MappingProxyType(dict(metadata or {}))
        return super().__new__(cls, name, vcpus, memory_mib, kernel, initrd, cmdline, disk_image, frozen)


def _path(label: str, value: object) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    if isinstance(value, str) and value and "\x00" not in value:
        return Path(value)
    raise InvalidSpec(f"{label} must be a path, not {value!r}"[:120])
