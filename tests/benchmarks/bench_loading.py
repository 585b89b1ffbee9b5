"""4. Loading a driver by name in a fresh process, against a process that only imports stevedore.

Each round starts both processes (the same interpreter, the same environment) and takes the
ratio of their wall times. stevedore caches the entry-point scan in
``$XDG_CACHE_HOME/python-entrypoints``: the warm case points it at a directory filled by an
earlier run, the cold case at an empty one each round. Bytecode caches are allowed (the
environment's ``PYTHONDONTWRITEBYTECODE`` is dropped) and warmed first, as on any installed
system.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from benchkit import median, ms, paired, record

ROUNDS = 15
TARGET = 1.5
LOADS = {
    "fake": "import powerdrivers; powerdrivers.load_driver('fake').close()",
    "libvirt": "import powerdrivers; powerdrivers.load_driver('libvirt', 'test:///default').close()",
}
BASELINE = "import stevedore"
#: What a driver's own hypervisor library costs to import, beside stevedore: its floor.
FLOORS = {"libvirt": "import stevedore, libvirt"}


def _env(cache_home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["XDG_CACHE_HOME"] = str(cache_home)
    return env


def _run(code: str, env: dict[str, str]) -> None:
    # Not subprocess.run(timeout=...): waiting with a timeout polls every 50 ms, which would
    # round every figure up to the next poll. A timer kills a process that hangs instead.
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    watchdog = threading.Timer(60.0, process.kill)
    watchdog.start()
    try:
        status = process.wait()
    finally:
        watchdog.cancel()
    assert status == 0, f"{code!r} exited with {status}"


@pytest.mark.benchmark(group="4 loading")
@pytest.mark.parametrize("cache", ["cold", "warm"])
@pytest.mark.parametrize("driver", list(LOADS))
def bench_load_driver_in_a_fresh_process(benchmark: Any, tmp_path: Path, driver: str, cache: str) -> None:
    code = LOADS[driver]
    env = _env(tmp_path / "warm")
    # Fill the bytecode caches (and, for the warm case, stevedore's) before measuring.
    _run(code, env)
    _run(BASELINE, env)

    def prepare() -> None:
        if cache == "cold":
            env["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cold-", dir=tmp_path)

    baselines = {"stevedore": lambda: _run(BASELINE, env)}
    if driver in FLOORS:
        baselines["floor"] = lambda: _run(FLOORS[driver], env)
    rounds = paired(benchmark, lambda: _run(code, env), baselines, rounds=ROUNDS, prepare=prepare)
    ratio = median(rounds.ratios("stevedore"))
    detail = (
        f"load {ms(median(rounds.subject))}, import stevedore "
        f"{ms(median(rounds.baselines['stevedore']))}; {len(rounds.subject)} rounds"
    )
    if "floor" in rounds.baselines:
        floor = median(rounds.between("floor", "stevedore"))
        detail += f"; python -c '{FLOORS[driver]}' alone: {floor:.2f} times import stevedore"
    record(
        benchmark,
        f"4/{driver}/{cache}",
        f"load_driver({driver!r}) in a fresh process ÷ python -c 'import stevedore', "
        f"entry-point cache {cache}",
        ratio,
        "x",
        target=("<=", TARGET),
        detail=detail,
        raw={
            "load_s": median(rounds.subject),
            "stevedore_s": median(rounds.baselines["stevedore"]),
            "rounds": len(rounds.subject),
        },
    )
