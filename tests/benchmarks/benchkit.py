"""The pytest plugin of the benchmark suite: shared fixtures, paired rounds, and the results schema.

Loaded with ``-p benchkit`` by ``run.py`` (``make bench``); the benchmark modules are named
``bench_*.py`` so that the normal test run never collects them.

Every benchmark goes through pytest-benchmark's ``pedantic`` mode: pytest-benchmark times the
subject, round after round. What the subject is compared with (the raw API, a polling loop, a
bare ``import stevedore``) runs in the same round, alternately before and after the subject, so
that each round yields one ratio and drift between rounds cancels out. Each benchmark stores its
headline figures in ``benchmark.extra_info["rows"]``, which ``report.py`` turns into the table.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from powerdrivers import Driver, Event, EventKind, PowerState

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "libvirt" / "tests"))

from libvirt_support.guest_image import GuestImage, GuestImageError, build_guest  # noqa: E402
from libvirt_support.libvirtd import LibvirtdError, LibvirtdHarness  # noqa: E402

QEMU_URI = "qemu:///system"

#: Facts learnt while the benchmarks run (daemon and hypervisor versions), added to the results.
FACTS: dict[str, str] = {}
#: Why benchmarks were skipped, for the report.
SKIPPED: list[str] = []


# -- paired rounds -----------------------------------------------------------------------------


@dataclass
class Rounds:
    """Per-round samples (seconds, unless a baseline returned its own figure) of one paired run."""

    subject: list[float]
    baselines: dict[str, list[float]] = field(default_factory=dict)

    def ratios(self, baseline: str, *, baseline_over_subject: bool = False) -> list[float]:
        """Per-round subject/baseline (or baseline/subject) ratios."""
        pairs = zip(self.subject, self.baselines[baseline], strict=True)
        if baseline_over_subject:
            return [b / s for s, b in pairs]
        return [s / b for s, b in pairs]

    def between(self, numerator: str, denominator: str) -> list[float]:
        """Per-round ratios of one baseline to another."""
        pairs = zip(self.baselines[numerator], self.baselines[denominator], strict=True)
        return [n / d for n, d in pairs]


def paired(
    benchmark: Any,
    subject: Callable[[], object],
    baselines: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    prepare: Callable[[], object] | None = None,
    after: Callable[[], object] | None = None,
    warmup: bool = True,
    collect: bool = True,
) -> Rounds:
    """Time ``subject`` with pytest-benchmark, and each baseline once in the same round.

    Baselines run before the subject in even rounds and after it in odd ones, in alternating
    order. A baseline returning a float reports that figure instead of its wall time.
    ``prepare`` runs (untimed) just before the subject, ``after`` just after it. With
    ``collect``, a full garbage collection (untimed) precedes each measurement, so that none
    pays for the garbage another left behind.
    """
    samples: dict[str, list[float]] = {name: [] for name in baselines}
    state = {"round": 0}

    def run_baselines() -> None:
        names = list(baselines)
        if state["round"] % 4 >= 2:
            names.reverse()
        for name in names:
            if collect:
                gc.collect()
            began = time.perf_counter()
            figure = baselines[name]()
            elapsed = time.perf_counter() - began
            samples[name].append(figure if isinstance(figure, float) else elapsed)

    def setup() -> None:
        if state["round"] % 2 == 0:
            run_baselines()
        if prepare is not None:
            prepare()
        if collect:
            gc.collect()

    def teardown() -> None:
        if after is not None:
            after()
        if state["round"] % 2 == 1:
            run_baselines()
        state["round"] += 1

    if warmup:
        for function in (*baselines.values(), subject):
            if prepare is not None and function is subject:
                prepare()
            function()
            if after is not None and function is subject:
                after()
    benchmark.pedantic(subject, setup=setup, teardown=teardown, rounds=rounds, iterations=1)
    return Rounds(list(benchmark.stats.stats.data), samples)


# -- figures -------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    """The median (a plain alias, so the modules read as the issue does)."""
    return statistics.median(values)


def percentile(values: list[float], pct: int) -> float:
    """The ``pct``-th percentile, interpolated between samples."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def record(
    benchmark: Any,
    key: str,
    measurement: str,
    figure: float,
    unit: str,
    *,
    target: tuple[str, float] | None = None,
    detail: str = "",
    raw: dict[str, Any] | None = None,
) -> None:
    """Add one table row to the benchmark's ``extra_info`` (kept in the JSON results).

    ``unit`` is ``x`` (a ratio), ``ms`` or ``/s``; ``target`` is ``("<=", value)`` or
    ``(">=", value)`` in the same unit.
    """
    met = None
    if target is not None:
        op, value = target
        met = figure <= value if op == "<=" else figure >= value
    benchmark.extra_info.setdefault("rows", []).append(
        {
            "key": key,
            "measurement": measurement,
            "figure": figure,
            "unit": unit,
            "target": list(target) if target is not None else None,
            "met": met,
            "detail": detail,
            "raw": raw or {},
        }
    )


def record_latency(benchmark: Any, key: str, what: str, latencies: list[float], target_ms: float) -> None:
    """Record the p99 of event latencies (seconds; an event before the return counts as 0)."""
    early = sum(1 for latency in latencies if latency <= 0)
    waits = [max(latency, 0.0) for latency in latencies]
    p50, p99 = percentile(waits, 50), percentile(waits, 99)
    detail = f"p50 {ms(p50)}, max {ms(max(waits))}; {len(latencies)} events"
    if early:
        lead = median([-latency for latency in latencies if latency <= 0])
        detail += (
            f"; {early} ({early / len(latencies):.0%}) reached the listener before the call returned"
            f" (median {ms(lead)} before), counted as 0"
        )
    record(
        benchmark,
        key,
        f"event latency, {what}: operation return → listener, p99",
        p99 * 1000,
        "ms",
        target=("<=", target_ms),
        detail=detail,
        raw={"p50_s": p50, "p99_s": p99, "early": early, "samples": len(latencies)},
    )


def pause_unpause_latencies(
    benchmark: Any, driver: Driver, name: str, *, rounds: int, wait_s: float
) -> list[float]:
    """Alternate pause()/unpause() on ``name``; per round, seconds from the call's return to its event.

    An event heard before the call returned gives a negative latency, which
    :func:`record_latency` counts as 0.
    """
    heard = threading.Event()
    heard_at: list[float] = []
    returned_at: list[float] = []
    latencies: list[float] = []

    def listener(event: Event) -> None:
        now = time.perf_counter()
        if event.name == name and event.kind in (EventKind.PAUSED, EventKind.UNPAUSED):
            heard_at.append(now)
            heard.set()

    def operate() -> None:
        if len(returned_at) % 2 == 0:
            driver.pause(name)
        else:
            driver.unpause(name)
        returned_at.append(time.perf_counter())

    def prepare() -> None:
        heard.clear()
        heard_at.clear()

    def collect() -> None:
        assert heard.wait(wait_s), f"no lifecycle event within {wait_s} s"
        latencies.append(heard_at[0] - returned_at[-1])

    with driver.subscribe(listener):
        try:
            paired(
                benchmark, operate, {}, rounds=rounds, prepare=prepare, after=collect,
                warmup=False, collect=False,
            )  # fmt: skip
        finally:
            if driver.get_instance(name).power_state is PowerState.PAUSED:
                driver.unpause(name)
    return latencies


def ms(seconds: float) -> str:
    """Seconds as milliseconds (microseconds below one), for details."""
    if 0 < abs(seconds) < 0.001:
        return f"{seconds * 1e6:.3g} \N{MICRO SIGN}s"
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.2f} s"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[LibvirtdHarness]:
    """A reachable libvirtd; started (and stopped afterwards) by the harness if none runs."""
    if shutil.which("libvirtd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
        pytest.skip("libvirtd is not installed (make bench installs it as root)")
    if os.geteuid() != 0:
        from libvirt_support.libvirtd import virsh_reachable

        if not virsh_reachable(QEMU_URI):
            pytest.skip("libvirtd is not running, and starting it needs root")
    try:
        harness = LibvirtdHarness(QEMU_URI).start()
    except LibvirtdError as error:
        pytest.skip(f"no libvirtd: {error}")
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The real Linux test guest (kernel + busybox initramfs), built once and cached."""
    try:
        return build_guest(REPO / ".cache" / "guest")
    except GuestImageError as error:
        pytest.skip(f"no Linux test guest: {error}")


# -- machine facts --------------------------------------------------------------------------------


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _libvirt_version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def note_libvirt_versions(conn: Any, prefix: str) -> None:
    """Remember the library, daemon and hypervisor versions a libvirt connection reports."""
    import libvirt

    FACTS["libvirt (client library)"] = _libvirt_version(libvirt.getVersion())
    try:
        FACTS[f"{prefix} daemon"] = _libvirt_version(conn.getLibVersion())
        FACTS[f"{prefix} hypervisor"] = f"{conn.getType()} {_libvirt_version(conn.getVersion())}"
    except libvirt.libvirtError:
        pass


def machine_facts() -> dict[str, str]:
    """CPU, cores, memory, OS and the versions that matter to the figures."""
    facts = {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "OS": f"{_os_name()}, Linux {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "virtualised": _virtualisation(),
        "libvirt-python": _version("libvirt-python"),
        "XenAPI SDK": _version("XenAPI"),
        "stevedore": _version("stevedore"),
        "pytest-benchmark": _version("pytest-benchmark"),
    }
    facts.update(FACTS)
    return facts


def _virtualisation() -> str:
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "unknown"
    return "yes" if " hypervisor" in flags else "no"


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Add the machine facts gathered during the run to the JSON results."""
    output_json["powerdrivers"] = {"machine": machine_facts(), "skipped": SKIPPED}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skipped benchmarks and why, so the table says what it lacks."""
    if report.skipped and isinstance(report.longrepr, tuple):
        SKIPPED.append(f"{report.nodeid.split('::')[-1]}: {report.longrepr[2].removeprefix('Skipped: ')}")
