"""OS-less test guests whose one VCPU does a known thing: a boot sector that spins or halts.

SeaBIOS boots the one-sector disk; the sector writes :data:`READY` to the serial port, then
either spins forever (:data:`SPIN`) or halts forever with interrupts on (:data:`HALT`).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from powerdrivers import Driver, InstanceSpec

READY = "PDVCPU"
"""What the boot sector writes to the serial port before it spins or halts."""
SPIN = b"\xeb\xfe"
"""``jmp $``: the VCPU is always runnable."""
HALT = b"\xfb\xf4\xeb\xfd"
"""``sti; hlt; jmp back to hlt``: the VCPU is halted but for the timer's interrupts."""
BOOT_TIMEOUT_S = 60.0
"""Seconds SeaBIOS may take to reach the boot sector (slow under software KVM)."""
_SAY_READY = b"\xba\xf8\x03" + b"".join(b"\xb0" + bytes([c]) + b"\xee" for c in READY.encode())
"""``mov dx, 0x3f8``, then ``mov al, c; out dx, al`` for each character of READY."""


def boot_disk(directory: Path, code: bytes) -> Path:
    """Write a 1 MiB raw disk whose boot sector runs ``code``; return its path (a new file: QEMU locks it)."""
    path = directory / f"boot-{code.hex()}-{uuid.uuid4().hex[:8]}.img"
    path.write_bytes((_SAY_READY + code).ljust(510, b"\0") + b"\x55\xaa" + bytes(1024 * 1024 - 512))
    path.chmod(0o644)
    return path


def spawn_guest(driver: Driver, disk: Path, prefix: str = "pdtest") -> str:
    """Spawn a one-VCPU OS-less guest booting ``disk``; return its name once it runs the boot sector."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    console = disk.parent / f"{name}.console"
    driver.spawn(
        InstanceSpec(name, vcpus=1, memory_mib=32, disk_image=disk, metadata={"console_log": str(console)})
    )
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while READY.encode() not in (console.read_bytes() if console.exists() else b""):
        assert time.monotonic() < deadline, f"{name} did not run its boot sector in {BOOT_TIMEOUT_S} s"
        time.sleep(0.05)
    return name
