"""Every domain's UUID, name, state and reason from one bulk libvirt call, in C (see _bulk.c)."""

from typing import Any

def domain_states(conn_handle: Any, /) -> list[tuple[str, str, int, int]] | None:
    """Return [(uuid, name, state, reason), ...] for every domain; None when libvirt fails."""
