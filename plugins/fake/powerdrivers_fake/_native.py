"""The fake hypervisor's own states, and their canonical meaning."""

from __future__ import annotations

import enum

from powerdrivers import NativeMapping, NativeStateTable, PowerState, Transition


class FakeNativeState(enum.StrEnum):
    """The states the fake hypervisor records, modelled on libvirt's."""

    RUNNING = "running"
    SHUTTING_DOWN = "shutting_down"
    REBOOTING = "rebooting"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"


FAKE_NATIVE_STATES = NativeStateTable(
    "fake",
    [
        NativeMapping(FakeNativeState.RUNNING, None, PowerState.RUNNING, None, "The VCPUs may run."),
        NativeMapping(
            FakeNativeState.SHUTTING_DOWN,
            None,
            PowerState.RUNNING,
            Transition.SHUTTING_DOWN,
            "The guest acknowledged a shutdown request but is still running, like libvirt's "
            "'being shut down': not off until the hypervisor says so.",
        ),
        NativeMapping(
            FakeNativeState.REBOOTING,
            None,
            PowerState.RUNNING,
            Transition.REBOOTING,
            "The guest is restarting itself; the instance keeps its resources.",
        ),
        NativeMapping(FakeNativeState.PAUSED, None, PowerState.PAUSED, None, "VCPUs are not scheduled."),
        NativeMapping(
            FakeNativeState.SUSPENDED, None, PowerState.SUSPENDED, None, "Memory saved, nothing runs."
        ),
        NativeMapping(FakeNativeState.SHUTOFF, None, PowerState.SHUTOFF, None, "No resources held."),
        NativeMapping(
            FakeNativeState.SHUTOFF,
            "destroyed",
            PowerState.SHUTOFF,
            None,
            "Powered off without the guest (a forced power-off): off, and forced.",
            forced=True,
        ),
        NativeMapping(
            FakeNativeState.CRASHED,
            None,
            PowerState.CRASHED,
            None,
            "Stopped by a crash, kept for inspection.",
        ),
    ],
)
