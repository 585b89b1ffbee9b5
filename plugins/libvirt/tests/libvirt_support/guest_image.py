"""Build a tiny, real Linux guest for QEMU (TCG) direct-kernel boot.

The guest is Debian's ``cloud-amd64`` kernel plus a busybox-only initramfs
whose ``/init`` loads ``evdev`` and ``button``, starts busybox ``acpid`` so
that the ACPI power button runs ``poweroff -f``, prints :data:`READY_MARKER`
on the serial console (``ttyS0``) and then idles.  Such a guest honours
ACPI shutdown/reboot requests, which is what the power-management tests
need, while booting in a few seconds even without KVM.

Nothing is installed on the host: the kernel and busybox packages are
fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``.  The
result is cached under the caller's cache directory, keyed by the kernel
package name/version and a fingerprint of the initramfs recipe.

Example::

    image = build_guest(repo_root / ".cache" / "guest")
    # image.kernel, image.initrd, image.cmdline -> libvirt <os> element
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUSYBOX_PACKAGE",
    "DEFAULT_CMDLINE",
    "KERNEL_METAPACKAGE",
    "POWEROFF_MARKER",
    "READY_MARKER",
    "GuestImage",
    "GuestImageError",
    "KernelPackage",
    "build_guest",
    "build_initramfs",
    "resolve_kernel_package",
]

READY_MARKER = "POWERDRIVERS-GUEST-READY"
"""Line printed on ttyS0 once the guest is ready to handle ACPI events."""

POWEROFF_MARKER = "POWERDRIVERS-GUEST-POWEROFF"
"""Line printed on ttyS0 when the guest acts on the ACPI power button."""

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
"""Debian metapackage that depends on the current versioned cloud kernel."""

BUSYBOX_PACKAGE = "busybox-static"
"""Debian package providing a statically linked busybox."""

DEFAULT_CMDLINE = "console=ttyS0 quiet loglevel=3 panic=10"
"""Kernel command line used for the guest (serial console, little noise)."""

_MODULES = ("evdev", "button")
_RECIPE_REVISION = "1"
_STAMP = "complete.json"
_CMD_TIMEOUT = 600.0

_INIT_SCRIPT = f"""#!/bin/sh
# powerdrivers test guest: PID 1 of a busybox-only initramfs.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in {" ".join(_MODULES)}; do
    insmod /lib/modules/$m.ko || echo "POWERDRIVERS-GUEST-ERROR insmod $m"
done
# acpid opens /dev/input/event0..N once at start-up: wait for the power button.
i=0
until grep -qs "Power Button" /sys/class/input/input*/name; do
    i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.05
done
acpid -f -c /etc/acpi -l /dev/console -p /run/acpid.pid &
i=0
until [ -s /run/acpid.pid ]; do
    i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.05
done
echo {READY_MARKER}
while :; do sleep 3600; done
"""

_POWER_BUTTON_HANDLER = f"""#!/bin/sh
echo {POWEROFF_MARKER}
sync
poweroff -f
"""


class GuestImageError(RuntimeError):
    """Raised when the guest image cannot be built (missing tool, package, file)."""


@dataclass(frozen=True)
class KernelPackage:
    """A concrete, versioned Debian kernel package."""

    name: str
    """Package name, e.g. ``linux-image-6.1.0-56-cloud-amd64``."""

    version: str
    """Debian version of the package, e.g. ``6.1.192-2``."""


@dataclass(frozen=True)
class GuestImage:
    """Artefacts needed for a libvirt/QEMU direct-kernel boot."""

    kernel: Path
    """Path to the ``vmlinuz`` image (libvirt ``<kernel>``)."""

    initrd: Path
    """Path to the gzip-compressed newc initramfs (libvirt ``<initrd>``)."""

    cmdline: str
    """Kernel command line (libvirt ``<cmdline>``)."""

    package: KernelPackage
    """Kernel package the image was built from."""

    ready_marker: str = READY_MARKER
    """Console line announcing that the guest handles ACPI events."""


# --------------------------------------------------------------------------
# helpers


def _run(argv: Sequence[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise GuestImageError if the tool is absent."""
    try:
        return subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=_CMD_TIMEOUT,
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError as exc:
        raise GuestImageError(f"required tool not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise GuestImageError(f"command timed out: {' '.join(argv)}") from exc


def _last_line(text: str) -> str:
    """Return the last non-empty line of tool output (usually the error)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _apt_update() -> None:
    """Refresh apt package lists (needs root)."""
    if os.geteuid() != 0:
        raise GuestImageError("apt package lists are missing/stale and apt-get update needs root")
    proc = _run(["apt-get", "update"])
    if proc.returncode != 0:
        raise GuestImageError(f"apt-get update failed: {_last_line(proc.stderr)}")


def _resolve_once(metapackage: str) -> KernelPackage | None:
    """Resolve ``metapackage`` to its versioned kernel dependency, or None if unknown."""
    proc = _run(["apt-cache", "depends", "--important", metapackage])
    if proc.returncode != 0:
        return None
    pattern = re.compile(r"^\s*\|?Depends:\s*(linux-image-\S+-cloud-amd64)\s*$")
    names = [m.group(1) for line in proc.stdout.splitlines() if (m := pattern.match(line))]
    for name in names:
        show = _run(["apt-cache", "show", "--no-all-versions", name])
        match = re.search(r"^Version:\s*(\S+)", show.stdout, re.MULTILINE)
        if show.returncode == 0 and match:
            return KernelPackage(name=name, version=match.group(1))
    return None


def resolve_kernel_package(metapackage: str = KERNEL_METAPACKAGE) -> KernelPackage:
    """Return the concrete cloud kernel package the metapackage currently depends on.

    Runs ``apt-get update`` once (as root) if the package lists do not know
    the metapackage yet.
    """
    found = _resolve_once(metapackage)
    if found is None:
        _apt_update()
        found = _resolve_once(metapackage)
    if found is None:
        raise GuestImageError(f"cannot resolve a linux-image-*-cloud-amd64 package from {metapackage}")
    return found


def _apt_download(packages: Sequence[str], dest: Path) -> None:
    """Download .deb files for ``packages`` into ``dest`` without installing them."""
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        # The private temp dir is not readable by the _apt sandbox user.
        argv += ["-o", "APT::Sandbox::User=root"]
    argv += list(packages)
    proc = _run(argv, cwd=dest)
    if proc.returncode != 0:
        first_error = _last_line(proc.stderr)
        try:
            _apt_update()  # lists may be missing or stale (e.g. fresh container)
        except GuestImageError as exc:
            raise GuestImageError(f"apt-get download {' '.join(packages)} failed: {first_error}") from exc
        proc = _run(argv, cwd=dest)
    if proc.returncode != 0:
        raise GuestImageError(f"apt-get download {' '.join(packages)} failed: {_last_line(proc.stderr)}")


def _extract_deb(deb: Path, dest: Path) -> None:
    """Unpack a .deb's data archive into ``dest`` with ``dpkg-deb -x``."""
    proc = _run(["dpkg-deb", "-x", str(deb), str(dest)])
    if proc.returncode != 0:
        raise GuestImageError(f"dpkg-deb -x {deb.name} failed: {_last_line(proc.stderr)}")


def _single(paths: list[Path], what: str) -> Path:
    """Return the only element of ``paths`` or raise a descriptive error."""
    if len(paths) != 1:
        raise GuestImageError(f"expected exactly one {what}, found {len(paths)}")
    return paths[0]


def _decompress_module(path: Path) -> bytes:
    """Return the raw ELF bytes of a kernel module, decompressing .xz/.gz/.zst."""
    data = path.read_bytes()
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        # Python 3.11's stdlib has no zstd; fall back to the zstd CLI.
        try:
            proc = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=False, timeout=60)
        except FileNotFoundError as exc:
            raise GuestImageError(f"{path.name} is zstd-compressed and the zstd tool is missing") from exc
        if proc.returncode != 0:
            raise GuestImageError(f"zstd failed on {path.name}")
        return proc.stdout
    raise GuestImageError(f"unsupported kernel module format: {path.name}")


def _module_depends(elf: bytes) -> list[str]:
    """Return the ``depends=`` list embedded in a module's .modinfo section."""
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", elf)
    if not match or not match.group(1):
        return []
    return [name.decode() for name in match.group(1).split(b",") if name]


def _collect_modules(modules_root: Path, wanted: Sequence[str]) -> list[tuple[str, bytes]]:
    """Find ``wanted`` modules (plus dependencies) in load order as (name, ELF bytes)."""
    index: dict[str, Path] = {}
    for path in modules_root.rglob("*.ko*"):
        name = path.name.split(".ko", 1)[0].replace("-", "_")
        index.setdefault(name, path)
    builtin_file = modules_root / "modules.builtin"
    builtin = (
        {Path(line).name.split(".ko", 1)[0].replace("-", "_") for line in builtin_file.read_text().split()}
        if builtin_file.exists()
        else set()
    )
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        if key not in index:
            if key in builtin:
                return
            raise GuestImageError(f"kernel module {name} not found in the kernel package")
        elf = _decompress_module(index[key])
        for dep in _module_depends(elf):
            visit(dep)
        ordered.append((key, elf))

    for module in wanted:
        visit(module)
    return ordered


# --------------------------------------------------------------------------
# newc cpio writer


class _CpioWriter:
    """Minimal writer for the SVR4 "newc" cpio format used by initramfs."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1000

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        encoded = name.encode() + b"\x00"
        fields = (
            self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0,
        )  # fmt: skip
        header = b"070701" + b"".join(f"{value:08X}".encode() for value in fields)
        self._buf.write(header + encoded)
        self._buf.write(b"\x00" * (-(len(header) + len(encoded)) % 4))
        self._buf.write(data)
        self._buf.write(b"\x00" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        """Add a directory (mode 0755)."""
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file."""
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node."""
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        """Append the trailer and return the archive bytes."""
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def _busybox_applets(busybox: Path) -> list[str]:
    """Return busybox applet paths (e.g. ``sbin/acpid``) by asking the binary."""
    proc = _run([str(busybox), "--list-full"])
    applets = [line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not applets:
        raise GuestImageError("cannot list busybox applets (busybox --list-full failed)")
    return applets


def build_initramfs(busybox: Path, modules: Sequence[tuple[str, bytes]]) -> bytes:
    """Return a gzip-compressed newc initramfs with busybox, ``modules`` and ``/init``.

    ``modules`` are (name, uncompressed ELF bytes) pairs, in load order; they are
    stored as ``/lib/modules/<name>.ko``.  The ``/init`` script loads the
    modules named in ``_MODULES`` (dependencies must already be among them).
    """
    applets = _busybox_applets(busybox)
    cpio = _CpioWriter()
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp",
            "var", "etc", "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules"}  # fmt: skip
    dirs.update(str(Path(applet).parent) for applet in applets)
    for directory in sorted(dirs - {"."}, key=lambda d: (d.count("/"), d)):
        cpio.directory(directory)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.symlink("var/run", "../run")
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        if applet != "bin/busybox":
            depth = applet.count("/")
            cpio.symlink(applet, "../" * depth + "bin/busybox")
    for name, elf in modules:
        cpio.file(f"lib/modules/{name}.ko", elf)
    cpio.file("etc/acpi/PWRF/00000080", _POWER_BUTTON_HANDLER.encode(), 0o755)
    cpio.file("init", _INIT_SCRIPT.encode(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


# --------------------------------------------------------------------------
# cache handling


def _recipe_fingerprint() -> str:
    """Short hash of everything that shapes the initramfs (invalidates the cache)."""
    digest = hashlib.sha256()
    for part in (_RECIPE_REVISION, _INIT_SCRIPT, _POWER_BUTTON_HANDLER, ",".join(_MODULES), DEFAULT_CMDLINE):
        digest.update(part.encode() + b"\x00")
    return digest.hexdigest()[:10]


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache directory (parallel test workers)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_cached(entry: Path) -> GuestImage | None:
    """Return the GuestImage stored in a complete cache entry, else None."""
    try:
        meta = json.loads((entry / _STAMP).read_text())
        image = GuestImage(
            kernel=entry / "vmlinuz",
            initrd=entry / "initrd.img",
            cmdline=str(meta["cmdline"]),
            package=KernelPackage(name=str(meta["package"]), version=str(meta["version"])),
        )
    except (OSError, ValueError, KeyError):
        return None
    if image.kernel.is_file() and image.initrd.is_file():
        return image
    return None


def _safe_version(version: str) -> str:
    """Make a Debian version usable in a directory name."""
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", version)


def build_guest(cache_dir: Path, *, metapackage: str = KERNEL_METAPACKAGE) -> GuestImage:
    """Build (or reuse from ``cache_dir``) the test guest and return its artefacts.

    The cache entry is ``<cache_dir>/<kernel-package>_<version>-<recipe-hash>``;
    a new kernel package version or a change of the initramfs recipe triggers
    a rebuild.  Needs ``apt-get``, ``apt-cache`` and ``dpkg-deb``; never installs
    anything.  Raises GuestImageError with a one-line message on failure.
    """
    cache_dir = Path(cache_dir).absolute()
    package = resolve_kernel_package(metapackage)
    entry = cache_dir / f"{package.name}_{_safe_version(package.version)}-{_recipe_fingerprint()}"
    cached = _load_cached(entry)
    if cached is not None:
        return cached
    with _locked(cache_dir):
        cached = _load_cached(entry)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="build-", dir=cache_dir) as tmp:
            work = Path(tmp)
            downloads = work / "debs"
            downloads.mkdir()
            _apt_download([package.name, BUSYBOX_PACKAGE], downloads)
            kernel_deb = _single(sorted(downloads.glob(f"{package.name}_*.deb")), f"{package.name} .deb")
            busybox_deb = _single(
                sorted(downloads.glob(f"{BUSYBOX_PACKAGE}_*.deb")), f"{BUSYBOX_PACKAGE} .deb"
            )
            root = work / "root"
            _extract_deb(kernel_deb, root)
            _extract_deb(busybox_deb, root)

            vmlinuz = _single(
                sorted((root / "boot").glob("vmlinuz-*")), "boot/vmlinuz-* in the kernel package"
            )
            kernel_release = vmlinuz.name.removeprefix("vmlinuz-")
            modules_root = next(
                (p for p in (root / "lib/modules" / kernel_release, root / "usr/lib/modules" / kernel_release)
                 if p.is_dir()),
                None,
            )  # fmt: skip
            if modules_root is None:
                raise GuestImageError(f"no modules directory for kernel {kernel_release}")
            busybox = root / "bin/busybox"
            if not busybox.is_file():
                raise GuestImageError(f"bin/busybox missing from {busybox_deb.name}")

            initrd = build_initramfs(busybox, _collect_modules(modules_root, _MODULES))

            staging = work / "entry"
            staging.mkdir()
            shutil.copyfile(vmlinuz, staging / "vmlinuz")
            (staging / "initrd.img").write_bytes(initrd)
            meta = {
                "package": package.name,
                "version": package.version,
                "kernel_release": kernel_release,
                "cmdline": DEFAULT_CMDLINE,
            }
            (staging / _STAMP).write_text(json.dumps(meta, indent=2) + "\n")
            for path in staging.iterdir():
                path.chmod(0o644)  # readable by the unprivileged QEMU user
            staging.chmod(0o755)
            if entry.exists():
                shutil.rmtree(entry)
            os.replace(staging, entry)
    image = _load_cached(entry)
    if image is None:
        raise GuestImageError(f"cache entry {entry} is incomplete after build")
    return image
