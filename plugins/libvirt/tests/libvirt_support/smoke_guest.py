"""End-to-end smoke check of the test guest under libvirt/QEMU (TCG, no KVM).

Run as ``python3 plugins.libvirt.tests.libvirt_support.smoke_guest.py`` or, from the
repository root, ``python3 -m plugins.libvirt.tests.libvirt_support.smoke_guest``.
It needs root if no libvirtd is reachable on ``qemu:///system``.

Checks, with timings printed at the end:

1. the guest boots (direct kernel boot) and prints the ready marker;
2. ``virsh shutdown`` (ACPI) brings it to "shut off" within a few seconds;
3. after a new start, ``virsh reboot`` (default mode) is honoured: the guest
   powers off, libvirt resets it and the ready marker appears again;
4. a domain without any OS keeps running for 3 s after ``virsh shutdown``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

if not __package__:  # executed as a script: make the sibling modules importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "libvirt_support"

from .guest_image import POWEROFF_MARKER, READY_MARKER, GuestImage, build_guest
from .libvirtd import LibvirtdError, LibvirtdHarness

__all__ = ["SmokeResult", "SmokeTestError", "domain_xml", "main", "run_smoke", "wait_for_marker"]

BOOT_TIMEOUT = 60.0
"""Seconds allowed from ``virsh start``/``reboot`` to the ready marker."""

SHUTDOWN_TIMEOUT = 10.0
"""Seconds allowed for an ACPI shutdown to reach "shut off"."""

NO_OS_GRACE = 3.0
"""Seconds an OS-less domain must keep running after ``virsh shutdown``."""

_REPO_ROOT = Path(__file__).resolve().parents[4]


class SmokeTestError(RuntimeError):
    """A smoke-test expectation was not met."""


@dataclass
class SmokeResult:
    """Timings (seconds) measured by :func:`run_smoke`."""

    boot_to_ready: float = 0.0
    """From ``virsh start`` to the ready marker on the console (first boot)."""

    shutdown: float = 0.0
    """From ``virsh shutdown`` to domain state "shut off"."""

    second_boot_to_ready: float = 0.0
    """From the second ``virsh start`` to the ready marker."""

    reboot: float = 0.0
    """From ``virsh reboot`` to the ready marker appearing again."""

    no_os_state_after_shutdown: str = ""
    """State of the OS-less domain :data:`NO_OS_GRACE` seconds after ``virsh shutdown``."""

    notes: list[str] = field(default_factory=list)
    """Free-form observations (host changes, daemons started...)."""


def domain_xml(name: str, image: GuestImage | None, console_log: Path | None) -> str:
    """Return libvirt XML for a TCG guest; ``image=None`` gives a domain without OS."""
    if image is not None:
        os_boot = (
            f"<kernel>{escape(str(image.kernel))}</kernel>"
            f"<initrd>{escape(str(image.initrd))}</initrd>"
            f"<cmdline>{escape(image.cmdline)}</cmdline>"
        )
    else:
        os_boot = "<boot dev='hd'/>"  # no disk at all: SeaBIOS finds nothing to boot
    serial = ""
    if console_log is not None:
        serial = (
            f"<serial type='file'><source path='{escape(str(console_log))}' append='on'/>"
            "<target port='0'/></serial>"
        )
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{os_boot}</os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {serial}
    <memballoon model='none'/>
  </devices>
</domain>
"""


def wait_for_marker(console_log: Path, marker: str, offset: int, timeout: float) -> float:
    """Wait until ``marker`` appears in ``console_log`` after byte ``offset``; return seconds waited."""
    start = time.monotonic()
    needle = marker.encode()
    while True:
        try:
            data = console_log.read_bytes()
        except FileNotFoundError:
            data = b""
        if len(data) < offset:  # file was truncated/recreated
            offset = 0
        if needle in data[offset:]:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SmokeTestError(f"{marker} not seen on the console within {timeout:g}s")
        time.sleep(0.05)


def _size(path: Path) -> int:
    """Return the size of ``path`` (0 if it does not exist yet)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _domstate(harness: LibvirtdHarness, name: str) -> str:
    """Return ``virsh domstate`` for ``name`` (e.g. "running", "shut off")."""
    return harness.virsh("domstate", name).stdout.strip()


def _wait_state(harness: LibvirtdHarness, name: str, state: str, timeout: float) -> float:
    """Wait until the domain reaches ``state``; return seconds waited."""
    start = time.monotonic()
    while (current := _domstate(harness, name)) != state:
        if time.monotonic() - start > timeout:
            raise SmokeTestError(f"{name} still {current!r}, not {state!r}, after {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic() - start


def _cleanup(harness: LibvirtdHarness, name: str) -> None:
    """Destroy and undefine a domain, ignoring "not running"/"not found" errors."""
    harness.virsh("destroy", name, check=False)
    harness.virsh("undefine", name, check=False)


def run_smoke(harness: LibvirtdHarness, image: GuestImage, work_dir: Path) -> SmokeResult:
    """Run all smoke checks against a reachable libvirtd; raise SmokeTestError on failure."""
    result = SmokeResult()
    suffix = uuid.uuid4().hex[:8]
    guest = f"powerdrivers-smoke-{suffix}"
    no_os = f"powerdrivers-smoke-noos-{suffix}"
    console = work_dir / f"{guest}.console.log"
    xml_file = work_dir / f"{guest}.xml"
    xml_file.write_text(domain_xml(guest, image, console))
    try:
        harness.virsh("define", str(xml_file))

        start = time.monotonic()
        harness.virsh("start", guest)
        wait_for_marker(console, READY_MARKER, 0, BOOT_TIMEOUT)
        result.boot_to_ready = time.monotonic() - start

        start = time.monotonic()
        harness.virsh("shutdown", guest)
        _wait_state(harness, guest, "shut off", SHUTDOWN_TIMEOUT)
        result.shutdown = time.monotonic() - start

        offset = _size(console)
        start = time.monotonic()
        harness.virsh("start", guest)
        wait_for_marker(console, READY_MARKER, offset, BOOT_TIMEOUT)
        result.second_boot_to_ready = time.monotonic() - start

        offset = _size(console)
        start = time.monotonic()
        harness.virsh("reboot", guest)
        wait_for_marker(console, READY_MARKER, offset, BOOT_TIMEOUT)
        result.reboot = time.monotonic() - start
        if POWEROFF_MARKER.encode() not in console.read_bytes()[offset:]:
            result.notes.append("reboot: guest did not log the ACPI power-button handler")
        if (state := _domstate(harness, guest)) != "running":
            raise SmokeTestError(f"{guest} is {state!r} after reboot, expected 'running'")
    finally:
        _cleanup(harness, guest)

    xml_file = work_dir / f"{no_os}.xml"
    xml_file.write_text(domain_xml(no_os, None, None))
    try:
        harness.virsh("create", str(xml_file))  # transient
        time.sleep(1.0)  # let SeaBIOS come up
        harness.virsh("shutdown", no_os)
        time.sleep(NO_OS_GRACE)
        result.no_os_state_after_shutdown = _domstate(harness, no_os)
        if result.no_os_state_after_shutdown != "running":
            raise SmokeTestError(f"OS-less domain is {result.no_os_state_after_shutdown!r} after shutdown")
    finally:
        _cleanup(harness, no_os)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache-dir", type=Path, default=_REPO_ROOT / ".cache" / "guest")
    parser.add_argument("--work-dir", type=Path, default=None, help="console logs/XML (default: temp dir)")
    args = parser.parse_args(argv)

    start = time.monotonic()
    image = build_guest(args.cache_dir)
    print(f"guest image: {image.kernel.parent} ({time.monotonic() - start:.1f}s)")
    work_dir: Path = args.work_dir or Path(tempfile.mkdtemp(prefix="powerdrivers-smoke-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o755)  # the QEMU user must be able to reach the console log
    try:
        with LibvirtdHarness() as harness:
            print(f"libvirtd: started {harness.started_daemons or 'nothing (already running)'}")
            if harness.host_actions:
                print(f"host changes: {'; '.join(harness.host_actions)}")
            result = run_smoke(harness, image, work_dir)
    except (SmokeTestError, LibvirtdError) as exc:
        print(f"FAIL: {exc} (logs in {work_dir})", file=sys.stderr)
        return 1
    print(f"boot-to-ready:        {result.boot_to_ready:6.2f} s")
    print(f"shutdown (ACPI):      {result.shutdown:6.2f} s")
    print(f"second boot-to-ready: {result.second_boot_to_ready:6.2f} s")
    print(f"reboot-to-ready:      {result.reboot:6.2f} s")
    print(f"no-OS domain after shutdown + {NO_OS_GRACE:g}s: {result.no_os_state_after_shutdown}")
    for note in result.notes:
        print(f"note: {note}")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
