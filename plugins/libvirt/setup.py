"""The C part of powerdrivers-libvirt: the bulk listing (powerdrivers_libvirt._bulk).

Everything else is in pyproject.toml. The extension needs what libvirt-python itself
needs to build (a C compiler, Python's headers, libvirt's headers through pkg-config); it
is optional: where it cannot be built, listings take the pure-Python path, with the same
readings.
"""

import shlex
import subprocess

from setuptools import Extension, setup


def _libvirt_flags(option: str) -> list[str]:
    try:
        found = subprocess.run(["pkg-config", option, "libvirt"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ["-lvirt"] if option == "--libs" else []
    return shlex.split(found.stdout)


setup(
    ext_modules=[
        Extension(
            "powerdrivers_libvirt._bulk",
            ["powerdrivers_libvirt/_bulk.c"],
            extra_compile_args=[*_libvirt_flags("--cflags"), "-Wall", "-std=c11"],
            extra_link_args=_libvirt_flags("--libs"),
            optional=True,
        )
    ]
)
