"""6. Listing 1,000 Xen VMs: the driver vs raw ``VM.get_all_records`` through the XenAPI SDK.

Both talk to the xapi simulator over loopback XML-RPC; the simulator runs in a process of its
own (``xapi_server.py``) so that serving the records does not share the client's interpreter.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI
from benchkit import median, ms, paired, record
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME

import powerdrivers

COUNT = 1000
ROUNDS = 11
TARGET = 1.15
START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def xapi_url() -> Iterator[str]:
    """The URL of a simulator serving COUNT VMs in its own process; stopped after the module."""
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("xapi_server.py")), str(COUNT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], START_TIMEOUT_S)
        assert ready, f"the simulator printed no URL within {START_TIMEOUT_S:g} s"
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), f"the simulator did not start: {url!r}"
        yield url
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.mark.benchmark(group="6 xen listing")
def bench_xen_list_instances(benchmark: Any, xapi_url: str) -> None:
    session = XenAPI.Session(xapi_url)
    session.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "2.0", "powerdrivers-bench")
    driver = powerdrivers.load_driver("xen", xapi_url, password=DEFAULT_PASSWORD)
    try:

        def with_driver() -> None:
            assert len(driver.list_instances()) == COUNT

        def raw() -> None:
            assert len(session.xenapi.VM.get_all_records()) >= COUNT

        rounds = paired(benchmark, with_driver, {"raw": raw}, rounds=ROUNDS)
    finally:
        driver.close()
        with contextlib.suppress(Exception):
            session.xenapi.session.logout()
    ratio = median(rounds.ratios("raw"))
    record(
        benchmark,
        "6/a",
        f"list {COUNT:,} Xen VMs (xapi simulator, loopback): driver ÷ raw VM.get_all_records",
        ratio,
        "x",
        target=("<=", TARGET),
        detail=(
            f"driver {ms(median(rounds.subject))}, SDK {ms(median(rounds.baselines['raw']))}; "
            f"{len(rounds.subject)} rounds"
        ),
        raw={
            "driver_s": median(rounds.subject),
            "raw_s": median(rounds.baselines["raw"]),
            "rounds": len(rounds.subject),
        },
    )
