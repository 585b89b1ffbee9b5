"""Xen VCPU statistics from xapi's /rrd_updates, over the wire, against the simulator's RRD handler."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from powerdrivers_xen import _rrd_updates
from powerdrivers_xen._options import parse_settings
from powerdrivers_xen._rrd_updates import RrdUpdatesReader
from powerdrivers_xen._session import XapiSession
from powerdrivers_xen._stats import CONTENTION_SOURCES
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator

import powerdrivers
from powerdrivers import (
    Driver,
    HypervisorConnectionError,
    HypervisorError,
    InstanceReading,
    InstanceVcpuCounters,
    OperationTimeout,
    PowerDriversError,
    Secret,
    VcpuSampler,
    stats_between,
)

STEP = 1


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    """A simulator whose RRD rows are one second long, so that tests need not wait five."""
    with XapiSimulator(op_delay=0.01, stats_interval=0.1, rrd_step=STEP) as simulator:
        yield simulator


@pytest.fixture
def xen(sim: XapiSimulator) -> Iterator[Driver]:
    password = Secret(DEFAULT_PASSWORD)
    with powerdrivers.load_driver("xen", sim.url, username=DEFAULT_USERNAME, password=password) as driver:
        yield driver


def recorded(sim: XapiSimulator, name: str) -> set[str]:
    """The run-state sources the simulated xapi records for a VM."""
    uuid = sim.vm_record(name)["uuid"]
    return {source for source in CONTENTION_SOURCES if sim._world.rrd.recorded(uuid, source)}


def reading(xen: Driver, name: str) -> InstanceReading:
    return next(r for r in xen.list_instances() if r.name == name)


def counters(xen: Driver, name: str) -> InstanceVcpuCounters:
    return xen._vcpu_counters(reading(xen, name))


def test_waiting_on_a_one_vcpu_vm_is_xapis_full_contention_not_zero(sim: XapiSimulator, xen: Driver) -> None:
    sim.set_vcpu_load("legacy-01", running=[0.4], waiting=[0.5])
    first = xen.vcpu_stats("legacy-01", window=0.05)
    # xapi did not record contention yet: the driver asked it to, and calls nothing blocked meanwhile.
    assert recorded(sim, "legacy-01") == set(CONTENTION_SOURCES)
    assert len(first) == 1
    assert first[0].running == pytest.approx(0.4)
    assert (first[0].waiting, first[0].blocked) == (0.0, 0.0)
    (stats,) = xen.vcpu_stats("legacy-01", window=0.05)
    assert stats.running == pytest.approx(0.4)
    assert stats.waiting == pytest.approx(0.5)
    assert stats.blocked == pytest.approx(0.1)
    assert stats.window_s == STEP  # the newest row: xapi's resolution, reported as it is
    assert (stats.halted, stats.halt_exits, stats.io_exits, stats.mmio_exits) == (None, None, None, None)


def test_a_two_vcpu_vm_under_contention_reports_its_mean_waiting_exactly(
    sim: XapiSimulator, xen: Driver
) -> None:
    sim.set_vcpu_load("web-01", running=[0.5, 0.25], waiting=[0.5, 0.25])
    xen.vcpu_stats("web-01", window=0.05)
    stats = xen.vcpu_stats("web-01", window=0.05)
    assert [s.running for s in stats] == pytest.approx([0.5, 0.25])
    # Each VCPU gets the domain's mean waiting, (0.5 + 0.25) / 2, within what it did not run.
    assert [s.waiting for s in stats] == pytest.approx([0.375, 0.375])
    assert [s.blocked for s in stats] == pytest.approx([0.125, 0.375])


def test_with_more_vcpus_waiting_is_the_bound_xapis_fractions_guarantee(
    sim: XapiSimulator, xen: Driver
) -> None:
    # Every VCPU waits for the whole step: all runnable, full contention.
    sim.set_vcpu_load("db-01", running=[0.0] * 4, waiting=[1.0] * 4)
    xen.vcpu_stats("db-01", window=0.05)
    assert [s.waiting for s in xen.vcpu_stats("db-01", window=0.05)] == pytest.approx([1.0] * 4)
    # One VCPU of four waits while the others block: at least a quarter of that time on average.
    sim.set_vcpu_load("db-01", running=[0.0] * 4, waiting=[1.0, 0.0, 0.0, 0.0])
    stats = xen.vcpu_stats("db-01", window=0.05)
    assert sum(s.waiting for s in stats) / 4 == pytest.approx(0.25)
    assert all(s.running + s.blocked + s.waiting == pytest.approx(1.0) for s in stats)


def test_a_window_covers_the_rows_that_ended_in_it(sim: XapiSimulator, xen: Driver) -> None:
    sim.set_vcpu_load("legacy-01", running=[0.25], waiting=[0.25])
    xen.vcpu_stats("legacy-01", window=0.05)
    (stats,) = xen.vcpu_stats("legacy-01", window=2.0)
    assert stats.window_s == 2.0
    assert (stats.running, stats.waiting, stats.blocked) == pytest.approx((0.25, 0.25, 0.5))


def test_counters_accumulate_xapis_rows_and_turn_into_the_same_fractions(
    sim: XapiSimulator, xen: Driver
) -> None:
    sim.set_vcpu_load("web-01", running=[0.6, 0.2], waiting=[0.4, 0.2])
    counters(xen, "web-01")  # asks xapi to record contention
    first = counters(xen, "web-01")
    time.sleep(2.1 * STEP)
    second = counters(xen, "web-01")
    assert second.taken_at_s - first.taken_at_s in (2.0 * STEP, 3.0 * STEP)
    assert all(b.running_ns >= a.running_ns for a, b in zip(first.vcpus, second.vcpus, strict=True))
    stats = stats_between(first, second)
    assert [s.running for s in stats] == pytest.approx([0.6, 0.2])
    # The domain's mean waiting, (0.4 + 0.2) / 2, for each VCPU.
    assert [s.waiting for s in stats] == pytest.approx([0.3, 0.3])
    assert [s.blocked for s in stats] == pytest.approx([0.1, 0.5])


def test_every_running_instance_in_one_rrd_updates_request(sim: XapiSimulator, xen: Driver) -> None:
    xen.vcpu_counters()  # asks xapi to record contention for each VM
    before = sim.rrd_requests
    readings = {r.name: r for r in xen.vcpu_counters()}
    assert sim.rrd_requests == before + 1
    # Running instances only: not the paused one, not the control domain.
    assert set(readings) == {"web-01", "db-01", "legacy-01"}
    assert [len(r.vcpus) for r in (readings["web-01"], readings["db-01"], readings["legacy-01"])] == [2, 4, 1]
    assert readings["db-01"].id == sim.vm_record("db-01")["uuid"]


def test_a_sampler_aggregates_waiting_from_contention_without_sleeping(
    sim: XapiSimulator, xen: Driver
) -> None:
    sim.set_vcpu_load("legacy-01", running=[0.3], waiting=[0.6])
    sampler = VcpuSampler(xen)
    assert sampler.sample() == []  # primes (and asks xapi to record contention)
    time.sleep(2.1 * STEP)
    by_name = {result.name: result for result in sampler.sample()}
    assert set(by_name) == {"web-01", "db-01", "legacy-01"}
    (stats,) = by_name["legacy-01"].vcpus
    assert (stats.running, stats.waiting, stats.blocked) == pytest.approx((0.3, 0.6, 0.1))


def test_an_expired_session_is_renewed_for_the_rrd_handler(sim: XapiSimulator, xen: Driver) -> None:
    xen.vcpu_stats("legacy-01", window=0.05)
    sim.expire_sessions()
    assert len(xen.vcpu_stats("legacy-01", window=0.05)) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b"<html><body>Service unavailable</body></html>",
        b"<xport><meta><step>5</step></meta></xport>",
        b"<xport><meta><legend/></meta><data/></xport>",
        b"<xport><meta><step>0</step><legend/></meta><data/></xport>",
        b"<xport><meta><step>inf</step><legend/></meta><data/></xport>",
        b"<xport><meta><step>5</step><legend><entry>nonsense</entry></legend></meta><data/></xport>",
        b"<xport><meta><step>5</step><legend><entry>AVERAGE:vm:u:cpu0</entry></legend></meta>"
        b"<data><row><t>10</t></row></data></xport>",
        b"<xport><meta><step>5</step><legend><entry>AVERAGE:vm:u:cpu0</entry></legend></meta>"
        b"<data><row><t>10</t><v>many</v></row></data></xport>",
        b"<xport><meta><step>5</step><legend><entry>AVERAGE:vm:u:cpu0</entry></legend></meta>"
        b"<data><row><t>10</t><v>7.5</v></row></data></xport>",
        b"<xport><meta><step>5</step><legend><entry>AVERAGE:vm:u:cpu0</entry></legend></meta>"
        b"<data><row><t>nan</t><v>0.5</v></row></data></xport>",
        b'<?xml version="1.0"?><!DOCTYPE xport [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<xport>&b;</xport>",
        b"<xport><meta><step>5</step>",
    ],
    ids=[
        "not-xml",
        "html",
        "no-data",
        "no-step",
        "zero-step",
        "infinite-step",
        "bad-legend",
        "missing-cells",
        "not-a-number",
        "fraction-out-of-range",
        "nan-time",
        "entity-expansion",
        "truncated",
    ],
)
def test_a_malformed_rrd_updates_answer_is_a_typed_error(
    sim: XapiSimulator, xen: Driver, body: bytes
) -> None:
    sim.answer_rrd_updates(body)
    with pytest.raises(HypervisorError) as caught:
        xen.vcpu_stats("legacy-01", window=0.05)
    assert caught.value.code == "MALFORMED_ANSWER"
    assert "rrd_updates" in str(caught.value)


def test_an_answer_beyond_the_size_bound_is_refused(
    sim: XapiSimulator, xen: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rrd_updates, "MAX_ANSWER_BYTES", 1000)
    sim.answer_rrd_updates(b"<xport>" + b" " * 2000 + b"</xport>")
    with pytest.raises(HypervisorError) as caught:
        xen.vcpu_stats("legacy-01", window=0.05)
    assert caught.value.code == "ANSWER_TOO_LARGE"
    monkeypatch.undo()
    assert len(xen.vcpu_stats("legacy-01", window=0.05)) == 1  # the connection was not reused half-read


def test_http_errors_of_the_rrd_handler_are_typed(sim: XapiSimulator, xen: Driver) -> None:
    sim.answer_rrd_updates(b"internal error", status=500, content_type="text/plain")
    with pytest.raises(HypervisorError) as caught:
        xen.vcpu_stats("legacy-01", window=0.05)
    assert caught.value.code == "HTTP_500"
    sim.answer_rrd_updates(b"", status=401)
    sim.answer_rrd_updates(b"", status=401)
    with pytest.raises(HypervisorConnectionError, match="refused the session"):
        xen.vcpu_stats("legacy-01", window=0.05)
    assert len(xen.vcpu_stats("legacy-01", window=0.05)) == 1


EMPTY = b"<xport><meta><step>5</step><end>0</end><legend/></meta><data/></xport>"


def test_a_vm_without_rows_is_a_typed_error(sim: XapiSimulator, xen: Driver) -> None:
    sim.answer_rrd_updates(EMPTY)
    with pytest.raises(HypervisorError) as caught:
        xen.vcpu_stats("legacy-01", window=0.05)
    assert caught.value.code == "NO_STATISTICS"
    sim.answer_rrd_updates(EMPTY)
    with pytest.raises(HypervisorError) as caught:
        counters(xen, "legacy-01")
    assert caught.value.code == "NO_STATISTICS"
    sim.answer_rrd_updates(EMPTY)
    assert xen.vcpu_counters() == []


def test_a_value_xapi_did_not_know_is_unattributed_time(sim: XapiSimulator, xen: Driver) -> None:
    uuid = sim.vm_record("legacy-01")["uuid"]
    columns = ["cpu0", *CONTENTION_SOURCES]
    legend = "".join(f"<entry>AVERAGE:vm:{uuid}:{name}</entry>" for name in columns).encode()
    sim.answer_rrd_updates(
        b"<xport><meta><step>5</step><legend>" + legend + b"</legend></meta><data>"
        b"<row><t>100</t><v>NaN</v><v>0.5</v><v>0</v><v>0</v></row></data></xport>"
    )
    (stats,) = xen.vcpu_stats("legacy-01", window=0.05)
    assert (stats.running, stats.waiting, stats.blocked) == (0.0, 0.0, 0.0)


def test_no_running_instance_makes_no_request(xen: Driver, sim: XapiSimulator) -> None:
    for name in ("web-01", "db-01", "legacy-01"):
        xen.power_off(name)
    before = sim.rrd_requests
    assert xen.vcpu_counters() == []
    assert sim.rrd_requests == before


def test_the_session_reference_is_in_no_log_repr_or_error(
    sim: XapiSimulator, xen: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    handle = xen._xapi.handle  # type: ignore[attr-defined]
    xen.vcpu_stats("legacy-01", window=0.05)
    sim.answer_rrd_updates(b"<xport>" + handle.encode() + b"</nope>")
    with pytest.raises(PowerDriversError) as caught:
        xen.vcpu_stats("legacy-01", window=0.05)
    texts = [caplog.text, repr(xen), repr(xen._statistics), repr(xen._statistics._reader)]  # type: ignore[attr-defined]
    texts += [str(caught.value), repr(caught.value)]
    assert all(handle not in text and DEFAULT_PASSWORD not in text for text in texts)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


class RawServer:
    """A TCP server on loopback answering each request with what ``answer`` makes of its first line."""

    def __init__(self, answer: Callable[[bytes, socket.socket], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/"
        self._answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                request = connection.recv(65536)
                try:
                    self._answer(request.split(b"\r\n", 1)[0], connection)
                except OSError:
                    continue

    def close(self) -> None:
        self._listener.close()


def reader_on(server: RawServer, sim: XapiSimulator, timeout_s: float = 5.0) -> RrdUpdatesReader:
    """A reader sending its GETs to ``server``, with a real session on the simulator."""
    options = {"username": DEFAULT_USERNAME, "password": Secret(DEFAULT_PASSWORD), "timeout": timeout_s}
    session = XapiSession(parse_settings(sim.url, options))
    return RrdUpdatesReader(parse_settings(server.url, options), session)


def test_a_server_echoing_the_request_in_broken_http_leaks_no_session(
    sim: XapiSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = RawServer(lambda line, connection: connection.sendall(b"XTTP/1.1 " + line + b"\r\n\r\n"))
    try:
        reader = reader_on(server, sim)
        handle = reader._session.handle
        with pytest.raises(HypervisorConnectionError) as caught:
            reader.read(0, ["some-uuid"])
    finally:
        server.close()
    assert "broken HTTP" in str(caught.value)
    assert handle not in str(caught.value) and handle not in caplog.text
    assert caught.value.__context__ is None


def test_a_trickling_rrd_handler_times_out_within_the_whole_call_bound(sim: XapiSimulator) -> None:
    def trickle(line: bytes, connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):
            connection.sendall(b"<")
            time.sleep(0.1)

    server = RawServer(trickle)
    try:
        reader = reader_on(server, sim, timeout_s=0.5)
        began = time.monotonic()
        with pytest.raises(OperationTimeout):
            reader.read(0)
        assert time.monotonic() - began < 2.0
    finally:
        server.close()


def test_a_refused_request_to_record_contention_is_logged_once_and_not_raised(
    sim: XapiSimulator, xen: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    # xapi answers rows of a VM it then does not know: recording them is refused (UUID_INVALID).
    unknown = "00000000-0000-4000-8000-000000000001"
    answer = (
        f"<xport><meta><step>5</step><legend><entry>AVERAGE:vm:{unknown}:cpu0</entry></legend></meta>"
        "<data><row><t>100</t><v>0.5</v></row></data></xport>"
    ).encode()
    sim.answer_rrd_updates(answer)
    sim.answer_rrd_updates(answer)
    assert xen.vcpu_counters() == []
    assert xen.vcpu_counters() == []
    refusals = [r for r in caplog.records if "could not ask xapi to record" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
