"""The default world: a control domain, templates, a snapshot and ordinary VMs in every state."""

from __future__ import annotations

from ._lifecycle import HALTED, PAUSED, RUNNING, SUSPENDED
from ._spec import VmSpec
from ._world import HOSTNAME

CONTROL_DOMAIN = f"Control domain on host: {HOSTNAME}"

DEFAULT_VMS: tuple[VmSpec, ...] = (
    VmSpec(CONTROL_DOMAIN, RUNNING, vcpus=4, memory_mib=4096, is_control_domain=True,
           name_description="The domain which manages physical devices and manages other domains"),
    VmSpec("Debian Bookworm 12", HALTED, is_a_template=True, is_default_template=True,
           other_config={"default_template": "true"}, name_description="Template for Debian Bookworm 12"),
    VmSpec("Windows Server 2022 (64-bit)", HALTED, vcpus=2, memory_mib=4096, is_a_template=True,
           is_default_template=True, other_config={"default_template": "true"}),
    VmSpec("web-01", RUNNING, vcpus=2, memory_mib=2048, name_description="Cooperative web server"),
    VmSpec("web-01 before upgrade", HALTED, is_a_snapshot=True, snapshot_of="web-01",
           name_description="Snapshot of web-01"),
    VmSpec("db-01", RUNNING, vcpus=4, memory_mib=8192, name_description="Cooperative database server"),
    VmSpec("legacy-01", RUNNING, vcpus=1, memory_mib=1024, cooperative=False,
           name_description="Guest that ignores clean shutdown and clean reboot"),
    VmSpec("build-01", HALTED, vcpus=2, memory_mib=2048),
    VmSpec("batch-01", PAUSED, vcpus=2, memory_mib=2048),
    VmSpec("archive-01", SUSPENDED, vcpus=1, memory_mib=1024),
)  # fmt: skip
"""What a fresh simulator holds, in creation order; each VM's uuid is stable (see ``stable_uuid``)."""
