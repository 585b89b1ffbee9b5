"""Run a simulated xapi in the foreground: ``python -m powerdrivers_xen.testing [--port N]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from ._simulator import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator

PASSWORD_ENV = "POWERDRIVERS_XENSIM_PASSWORD"  # noqa: S105 - a variable name, not a password
"""The environment variable the password is read from when ``--password`` is not given."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m powerdrivers_xen.testing",
        description="Serve a simulated xapi (XenAPI over XML-RPC) on 127.0.0.1 until interrupted.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument(
        "--username", default=DEFAULT_USERNAME, help=f"accepted username (default: {DEFAULT_USERNAME})"
    )
    parser.add_argument(
        "--password",
        default=None,
        help=f"accepted password (default: ${PASSWORD_ENV}, else the built-in test password)",
    )
    parser.add_argument(
        "--guest-delay", type=float, default=0.3, help="seconds a cooperative guest takes to shut down"
    )
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds a clean shutdown waits")
    parser.add_argument(
        "--rrd-step", type=int, default=5, help="seconds each /rrd_updates row covers (default: 5, as xapi)"
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (default: never)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, serve until interrupted (or ``--duration`` passes), and return 0."""
    options = _parser().parse_args(argv)
    password = options.password or os.environ.get(PASSWORD_ENV) or DEFAULT_PASSWORD
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    simulator = XapiSimulator(
        username=options.username,
        password=password,
        port=options.port,
        guest_delay=options.guest_delay,
        shutdown_timeout=options.shutdown_timeout,
        rrd_step=options.rrd_step,
    )
    with simulator:
        print(f"xapi simulator listening on {simulator.url} (username {options.username!r})", flush=True)
        deadline = time.monotonic() + options.duration if options.duration > 0 else None
        try:
            while not stop.wait(1.0):
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except KeyboardInterrupt:
            pass
    print("xapi simulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
