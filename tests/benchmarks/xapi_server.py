"""Serve the xapi simulator with N VMs in a process of its own, for the Xen benchmark.

Usage: ``python xapi_server.py COUNT``. Prints the URL on the first line of standard output,
then serves until standard input closes (the benchmark's end) or ten minutes pass.
"""

from __future__ import annotations

import sys
import threading

from powerdrivers_xen.testing import XapiSimulator

#: The power states the VMs cycle through.
STATES = ("Running", "Halted", "Paused", "Suspended")
MAX_SERVE_S = 600.0


def main(argv: list[str]) -> int:
    """Serve ``argv[0]`` VMs until standard input closes."""
    count = int(argv[0])
    with XapiSimulator(populate=False) as simulator:
        for index in range(count):
            simulator.add_vm(f"vm-{index:05d}", STATES[index % len(STATES)])
        print(simulator.url, flush=True)
        closed = threading.Event()

        def watch_stdin() -> None:
            sys.stdin.read()
            closed.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        closed.wait(MAX_SERVE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
