"""The process-wide libvirt event loop: one background thread, started once."""

from __future__ import annotations

import logging
import threading

import libvirt

_LOG = logging.getLogger("powerdrivers.libvirt")
_lock = threading.Lock()
_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a daemon thread.

    It must be registered before a connection is opened for that connection
    to deliver events and keepalives, so the driver calls this first. It
    also silences libvirt's habit of printing every error to stderr: errors
    reach the caller as typed exceptions instead.
    """
    global _started  # noqa: PLW0603  (one loop per process, by libvirt's design)
    with _lock:
        if _started:
            return
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run, name="powerdrivers-libvirt-events", daemon=True).start()
        _started = True


def _ignore_error(_context: object, _error: object) -> None:
    return None


def _run() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            _LOG.error("libvirt event loop iteration failed")
