"""The description of a VM to add to the simulated host."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field

_UUID_NAMESPACE = uuidlib.UUID("5b0c7a0e-6f3d-4a53-9a52-58d3b1f0c2a1")


def stable_uuid(name_label: str) -> str:
    """Return the uuid a VM of this name gets unless one is given: the same in every run."""
    return str(uuidlib.uuid5(_UUID_NAMESPACE, name_label))


@dataclass(frozen=True)
class VmSpec:
    """A VM to create: its identity, flags, size, starting power state and guest behaviour.

    ``power_state`` may be any string (``"Crashed"`` as older xapi reported, or something no
    xapi ever sent) to test how a client copes. An uncooperative guest (``cooperative=False``)
    ignores clean shutdown and clean reboot requests. ``snapshot_of`` names the VM (by name
    label) a snapshot was taken of.
    """

    name_label: str
    power_state: str = "Halted"
    vcpus: int = 2
    memory_mib: int = 2048
    cooperative: bool = True
    name_description: str = ""
    is_a_template: bool = False
    is_default_template: bool = False
    is_a_snapshot: bool = False
    snapshot_of: str = ""
    is_control_domain: bool = False
    other_config: Mapping[str, str] = field(default_factory=dict)
    uuid: str = ""
