"""Fleets sharing one PostgreSQL store: each host owned by one process, taken over when its owner goes.

A real throwaway PostgreSQL cluster (the session's ``postgres`` fixture); the fleets are real
(two in this process, each with its own store and so its own connections and advisory locks,
or one in a ``powerdrivers serve`` subprocess killed with SIGKILL).
"""

from __future__ import annotations

import logging
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from api_support import free_port
from sqlalchemy.engine import make_url

from powerdrivers import PowerState
from powerdrivers.keeper import ActionStatus
from powerdrivers.service._bus import ServiceEvent
from powerdrivers.service._config import ServiceConfig
from powerdrivers.service._fleet import Fleet

_T = TypeVar("_T")
_WAIT_S = 20.0
_FAST = "takeover_interval = 0.2"


def _wait_for(condition: Callable[[], _T | None], what: str, timeout: float = _WAIT_S) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def _running(config: ServiceConfig) -> Iterator[Fleet]:
    fleet = Fleet(config)
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


def _recorder(fleet: Fleet) -> tuple[list[ServiceEvent], threading.Lock]:
    events: list[ServiceEvent] = []
    lock = threading.Lock()

    def record(event: ServiceEvent) -> None:
        with lock:
            events.append(event)

    fleet.bus.add_listener(record)
    return events, lock


def test_two_fleets_split_ownership_and_serve_each_others_hosts(
    service_config_factory: Callable[..., ServiceConfig], postgres_url: str
) -> None:
    first_config = service_config_factory(store=postgres_url, extra=_FAST, name="first.toml")
    second_config = service_config_factory(store=postgres_url, extra=_FAST, name="second.toml")
    with _running(first_config) as first, _running(second_config) as second:
        assert first.owned_hosts() == ["host-1", "host-2"]
        assert second.owned_hosts() == []
        owners = {host.owner for host in second.hosts()}
        assert len(owners) == 1 and None not in owners
        events, lock = _recorder(second)
        # A request through the process that does not own the host: written, then carried out by the owner.
        (target, *_), _ = second.instances(host="host-2", power_state="running")
        action = second.request(target.id, "power_off", "ops")
        _wait_for(lambda: second.action(action.id).status is ActionStatus.DONE, "the owner to carry it out")
        _wait_for(
            lambda: second.instance(target.id).power_state is PowerState.SHUTOFF, "the state to be read"
        )

        def seen() -> bool:
            with lock:
                return any(e.type == "record" and e.data["instance_id"] == target.id for e in events)

        # And the non-owner's own event stream hears of it (LISTEN/NOTIFY, then a re-read).
        _wait_for(seen, "the other process's event")


def test_a_stopped_owners_hosts_are_taken_over(
    service_config_factory: Callable[..., ServiceConfig], postgres_url: str
) -> None:
    first_config = service_config_factory(store=postgres_url, extra=_FAST, name="first.toml")
    second_config = service_config_factory(store=postgres_url, extra=_FAST, name="second.toml")
    first = Fleet(first_config)
    first.start()
    try:
        with _running(second_config) as second:
            assert second.owned_hosts() == []
            first.stop()
            _wait_for(lambda: second.owned_hosts() == ["host-1", "host-2"], "the take-over")
            (target, *_), _ = second.instances(host="host-1", power_state="shutoff")
            action = second.request(target.id, "start", "ops")
            _wait_for(lambda: second.action(action.id).status is ActionStatus.DONE, "the new owner to act")
    finally:
        first.stop()


def test_a_lost_claim_connection_drops_the_host_then_it_is_claimed_again(
    service_config_factory: Callable[..., ServiceConfig],
    postgres_url: str,
    postgres: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = service_config_factory(store=postgres_url, extra=_FAST)
    database = make_url(postgres_url).database
    with _running(config) as fleet, caplog.at_level(logging.WARNING, logger="powerdrivers.service"):
        assert fleet.owned_hosts() == ["host-1", "host-2"]
        with postgres.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
        _wait_for(lambda: "its claim was lost" in caplog.text, "the lost claim to be noticed")
        _wait_for(lambda: fleet.owned_hosts() == ["host-1", "host-2"], "the hosts to be claimed again")
        (target, *_), _ = fleet.instances(host="host-1", power_state="running")
        action = fleet.request(target.id, "pause", "ops")
        _wait_for(lambda: fleet.action(action.id).status is ActionStatus.DONE, "an action after the re-claim")


def test_a_sigkilled_serve_process_hosts_are_taken_over(
    service_config_factory: Callable[..., ServiceConfig], postgres_url: str
) -> None:
    served = service_config_factory(
        store=postgres_url, extra=_FAST, name="served.toml", listen=f"127.0.0.1:{free_port()}"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "powerdrivers", "serve", "--config", str(served.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # Announced once its fleet has started, which claims every host it can: both, here.
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready and process.stdout.readline().startswith("powerdrivers service on ")
        local_config = service_config_factory(store=postgres_url, extra=_FAST, name="local.toml")
        with _running(local_config) as local:
            assert local.owned_hosts() == []
            assert all(f"pid {process.pid} on" in (host.owner or "") for host in local.hosts())
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            killed_at = time.monotonic()
            _wait_for(lambda: local.owned_hosts() == ["host-1", "host-2"], "the take-over after SIGKILL")
            assert time.monotonic() - killed_at < 5.0
            assert all(f"pid {process.pid} on" not in (host.owner or "") for host in local.hosts())
            (target, *_), _ = local.instances(host="host-2", power_state="running")
            action = local.request(target.id, "power_off", "ops")
            _wait_for(lambda: local.action(action.id).status is ActionStatus.DONE, "the new owner to act")
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
