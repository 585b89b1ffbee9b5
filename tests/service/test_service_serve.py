"""``powerdrivers serve``: a real process on a real port, announced in one line, stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from api_support import free_port

from powerdrivers import PowerState, load_driver
from powerdrivers.keeper import HostView, SqlStore, StoreError
from powerdrivers.service._config import ServiceConfig, load_config
from powerdrivers.service._serve import prepare_demo

_START_S = 60.0


@contextmanager
def _serving(config: ServiceConfig) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``powerdrivers serve`` on ``config``; yield the process and its announced line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "powerdrivers", "serve", "--config", str(config.path), "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], _START_S)
        line = process.stdout.readline() if ready else ""
        if not line:
            process.kill()
            _, errors = process.communicate(timeout=10)
            raise AssertionError(f"serve did not announce itself: {errors}")
        yield process, line
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def test_serve_announces_answers_and_stops_on_sigterm(
    service_config_factory: Callable[..., ServiceConfig], service_tokens: dict[str, str]
) -> None:
    port = free_port()
    config = service_config_factory(listen=f"127.0.0.1:{port}")
    with _serving(config) as (process, line):
        assert line == f"powerdrivers service on http://127.0.0.1:{port}/ (2 hosts, store {config.store})\n"
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200
        hosts = httpx.get(
            f"{base}/v1/hosts", headers={"Authorization": f"Bearer {service_tokens['reader']}"}, timeout=10
        )
        assert hosts.status_code == 200
        assert httpx.get(f"{base}/v1/hosts", timeout=10).status_code == 401
        # The metrics were there before the fleet started: each host's first resync is counted.
        metrics = httpx.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {service_tokens['reader']}"}, timeout=10
        ).text
        for host in ("host-1", "host-2"):
            counted = re.search(rf'powerdrivers_sync_duration_seconds_count{{host="{host}"}} (\S+)', metrics)
            assert counted is not None and float(counted.group(1)) >= 1
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=30)
        assert process.returncode == 0, errors
        assert time.monotonic() - started < 20
    for value in service_tokens.values():
        assert value not in out + errors + line
    assert "Traceback" not in errors


def test_serve_stops_on_sigint_too(service_config_factory: Callable[..., ServiceConfig]) -> None:
    config = service_config_factory(hosts=1, listen=f"127.0.0.1:{free_port()}")
    with _serving(config) as (process, _):
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
        assert process.returncode == 0, errors


def test_help_is_light_and_serve_without_the_extra_says_which_to_install(
    service_config: ServiceConfig,
) -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert helped.returncode == 0 and "serve" in helped.stdout
    # A process where the web framework cannot be imported, as without the extra.
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from powerdrivers._cli import main\n"
        f"sys.exit(main(['serve', '--config', {str(service_config.path)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr == (
        "powerdrivers: error: powerdrivers serve needs the service extra: "
        "pip install 'powerdrivers[service]' (fastapi, uvicorn not installed)\n"
    )


def test_help_imports_no_web_framework() -> None:
    code = (
        "import sys\nfrom powerdrivers._cli import _build_parser\n_build_parser()\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'sqlalchemy', 'asyncio') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.stdout == "[]\n"


def test_a_bad_config_exits_2_before_listening(service_config_factory: Callable[..., ServiceConfig]) -> None:
    config = service_config_factory(hosts=1)
    config.path.write_text(config.path.read_text().replace('listen = "127.0.0.1:8080"', 'listen = "nowhere"'))
    done = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "serve", "--config", str(config.path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"powerdrivers: error: {config.path} line 2: listen: must be HOST:PORT (e.g. 127.0.0.1:8080), "
        "not 'nowhere'\n"
    )


def test_the_demo_of_make_serve_is_made_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = prepare_demo(tmp_path / "serve")
    shown = capsys.readouterr().out
    config = load_config(config_path)
    assert [host.name for host in config.hosts] == ["lab-1", "lab-2", "lab-3"]
    assert sorted(token.role.value for token in config.tokens) == ["operator", "reader"]
    # Sampled every few seconds, so the instance pages' VCPU plots show data at once.
    assert 0 < config.keeper.vcpu_sample_interval <= 5
    for token in config.tokens:
        file = tmp_path / "serve" / f"{token.name}.token"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert f"in {file}" in shown and token.value.reveal() not in shown
    ids: set[str] = set()
    states: set[PowerState] = set()
    for host in config.hosts:
        with load_driver(host.driver, host.uri) as driver:
            readings = driver.list_instances()
        ids |= {reading.id for reading in readings}
        assert host.uri is not None
        records = json.loads(Path(host.uri.removeprefix("fake://")).read_text())["instances"].values()
        assert max(record["vcpus"] for record in records) > 1  # pages with several VCPU plots
        states |= {reading.power_state for reading in readings}
    assert len(ids) == 18
    assert states == {PowerState.RUNNING, PowerState.SHUTOFF, PowerState.PAUSED}
    tokens = [token.value for token in config.tokens]
    prepare_demo(tmp_path / "serve")
    assert [token.value for token in load_config(config_path).tokens] == tokens


def test_an_address_already_taken_exits_1_in_one_line_and_frees_its_hosts(
    service_config_factory: Callable[..., ServiceConfig],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = service_config_factory(hosts=1, listen=f"127.0.0.1:{port}")
        done = subprocess.run(
            [sys.executable, "-m", "powerdrivers", "serve", "--config", str(config.path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.endswith(
        f"powerdrivers: error: cannot listen on 127.0.0.1:{port} (see the error above)\n"
    )
    assert "Traceback" not in done.stderr
    assert "keeping host" not in done.stderr  # the address is bound before any host is taken on
    # Nothing stays claimed: a service started next keeps the host.
    next_port = free_port()
    with _serving(service_config_factory(hosts=1, listen=f"127.0.0.1:{next_port}")) as (_, line):
        assert line.startswith("powerdrivers service on ")
        assert httpx.get(f"http://127.0.0.1:{next_port}/healthz").json()["hosts"] == ["host-1"]


def test_a_stop_signal_while_the_fleet_starts_stops_it_there_cleanly(
    service_config_factory: Callable[..., ServiceConfig], tmp_path: Path
) -> None:
    # Every call of the host's driver takes 3 s, so the first resync holds the start that long.
    config = service_config_factory(hosts=1, listen=f"127.0.0.1:{free_port()}", host_options="latency = 3")
    process = subprocess.Popen(
        [sys.executable, "-m", "powerdrivers", "serve", "--config", str(config.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        store = SqlStore(config.store)
        try:
            deadline = time.monotonic() + _START_S
            while not any(host.owner for host in _hosts(store)):
                assert time.monotonic() < deadline, "the host was never claimed"
                time.sleep(0.05)
        finally:
            store.close()
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, errors
    assert out == ""  # it never began serving
    assert "Traceback" not in errors
    store = SqlStore(config.store)
    try:
        assert [host.owner for host in store.hosts()] == [None]  # its claim was released
    finally:
        store.close()


def _hosts(store: SqlStore) -> list[HostView]:
    try:
        return store.hosts()
    except StoreError:
        return []  # the service is creating the store's tables
