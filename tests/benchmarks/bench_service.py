"""The reference service (issue 13): 1. listing 10,000 instances through the API; 4. resyncing 100 hosts.

S1: every page of ``GET /v1/instances`` (the largest page, 1,000) over 10,000 instances, through
real HTTP (``httpx`` to uvicorn on loopback, the response parsed as a client does), against
the same keyset query for the same rows and columns on the database driver's own connection
(``sqlite3``, ``psycopg``), in the same rounds, on SQLite and on PostgreSQL. So that the detail
says where the time goes, the same rounds also time the endpoint's store read
(``instances_page_json``) alone; the Python path it replaced (``instances_page``, then with
each view's dict and the response's JSON body built in process); and the same GETs with the
bodies read but their items left unparsed.

S4: one Fleet keeping 100 fake hosts of 100 instances each: ``Fleet.resync()`` (every host's
full resync, each on its host's worker) against the sum of the 100 drivers' own
``list_instances()``, timed one after the other in the same round; the number of threads the
process runs is recorded and bounded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench_service_parts import fake_host, new_token, serving, write_config
from benchkit import Rounds, median, ms, paired, record
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from starlette.responses import JSONResponse

from powerdrivers.keeper import SqlStore
from powerdrivers.keeper._schema import instances
from powerdrivers.service._app import create_app
from powerdrivers.service._fleet import CLAIM_WORKERS, Fleet

INSTANCES = 10_000
RACKS = 10
PAGE = 1000
LIST_ROUNDS = 15
TARGET_LIST_RATIO = 3.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMES = "\N{MULTIPLICATION SIGN}"
_STATES = [("running", "running", None), ("shutoff", "shutoff", "shutdown"), ("paused", "paused", "user")]
#: The columns of the API's instance object, as the bare query reads them.
_COLUMNS = (
    "id, host, name, power_state, transition, native_state, native_reason, observed_at, policy, stale, "
    "quarantined, fault, failures, backoff_until, action_failures"
)

RESYNC_HOSTS = 100
RESYNC_INSTANCES = 100
RESYNC_ROUNDS = 15
TARGET_RESYNC_RATIO = 2.0
#: Threads per host: the keeper's worker for it, and the fake driver's own watcher of its state file.
THREADS_PER_HOST = 2
#: Threads beyond those the process may run (main, the keeper's store, the feed, the claim loop and
#: pool, a few of the libraries'): a resync must not start a thread per instance or per call.
THREADS_OVER_HOSTS = 10 + CLAIM_WORKERS
#: The keeper's and service's own: a worker per host, the keeper's store poller, its VCPU sampler
#: (one for all hosts), the feed, the claim loop, and the claim pool's bounded workers.
SERVICE_THREADS_OVER_HOSTS = 4 + CLAIM_WORKERS


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store's URL: an SQLite file, or a fresh database of the harness's PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _fill(store: SqlStore) -> None:
    """10,000 instances on 10 hosts (not the fleet's own), in every state and policy, written straight in."""
    for rack in range(RACKS):
        store.register_host(f"rack-{rack:02d}", "fake", None)
    rows = []
    for n in range(INSTANCES):
        state, native, reason = _STATES[n % len(_STATES)]
        rows.append(
            {
                "id": f"{n:08x}-5a5a-4b4b-8c8c-{n:012x}",
                "host": f"rack-{n % RACKS:02d}",
                "name": f"vm-{n:05d}",
                "power_state": state,
                "native_state": native,
                "native_reason": reason,
                "observed_at": T0 + timedelta(seconds=n),
                "policy": "always" if n % 4 == 0 else "manual",
                "stale": False,
                "quarantined": False,
                "failures": 0,
                "records": 0,
                "change_seq": 0,
            }
        )
    with store._engine.begin() as connection:
        connection.execute(insert(instances), rows)


def _bare_pages(url: str) -> tuple[Callable[[], int], Callable[[], None]]:
    """The same keyset pages on the driver's own connection: a function reading them all, and a closer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connection: Any = sqlite3.connect(str(parsed.database))
        first = f"SELECT {_COLUMNS} FROM instances ORDER BY host, id LIMIT ?"
        following = f"SELECT {_COLUMNS} FROM instances WHERE (host, id) > (?, ?) ORDER BY host, id LIMIT ?"
    else:
        import psycopg

        connection = psycopg.connect(
            host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password,
            dbname=parsed.database, autocommit=True,
        )  # fmt: skip
        first = f"SELECT {_COLUMNS} FROM instances ORDER BY host, id LIMIT %s"
        following = f"SELECT {_COLUMNS} FROM instances WHERE (host, id) > (%s, %s) ORDER BY host, id LIMIT %s"

    def read_all() -> int:
        total = 0
        rows = connection.execute(first, (PAGE + 1,)).fetchall()
        while True:
            page = rows[:PAGE]
            total += len(page)
            if len(rows) <= PAGE:
                return total
            rows = connection.execute(following, (page[-1][1], page[-1][0], PAGE + 1)).fetchall()

    return read_all, connection.close


@pytest.fixture
def listing(store_url: str, tmp_path: Path) -> Iterator[tuple[str, Fleet, SqlStore]]:
    """A started Fleet (one empty fake host of its own) over a store holding the 10,000 instances."""
    store = SqlStore(store_url)
    _fill(store)
    fake_host(tmp_path / "live.json", "live", 0)
    config = write_config(tmp_path, "service.toml", store_url, ["live"], token=new_token())
    fleet = Fleet(config, store=store)
    fleet.start()
    try:
        yield make_url(store_url).get_backend_name(), fleet, store
    finally:
        fleet.stop()
        store.close()


@pytest.mark.benchmark(group="S1 service instance listing")
def bench_service_list_instances(
    benchmark: Any, listing: tuple[str, Fleet, SqlStore], store_url: str
) -> None:
    """Every page of GET /v1/instances over 10,000 instances, against the bare query of the same rows."""
    backend, fleet, store = listing
    token = fleet.config.tokens[0].value.reveal()
    bare, close_bare = _bare_pages(store_url)

    def store_pages(*, render: bool = False) -> None:
        cursor: str | None = None
        seen = 0
        while True:
            page, cursor = store.instances_page(after=cursor, limit=PAGE)
            if render:
                # What the endpoint adds in process: each view's dict, and the response's JSON body.
                JSONResponse({"items": [view.to_dict() for view in page], "next": cursor})
            seen += len(page)
            if cursor is None:
                break
        assert seen == INSTANCES

    def json_pages() -> None:
        cursor: str | None = None
        while True:
            _, cursor = store.instances_page_json(after=cursor, limit=PAGE)
            if cursor is None:
                break

    with serving(create_app(fleet)) as base, httpx.Client(base_url=base, timeout=60) as client:
        headers = {"Authorization": f"Bearer {token}"}

        def api_pages(*, parse: bool = True) -> None:
            params: dict[str, Any] = {"limit": PAGE}
            seen = 0
            while True:
                answer = client.get("/v1/instances", params=params, headers=headers)
                assert answer.status_code == 200, answer.text[:200]
                if parse:
                    body = answer.json()
                    seen += len(body["items"])
                    following = body["next"]
                else:
                    # The body read in full, the items left unparsed: only the cursor at its end.
                    raw = answer.content
                    following = json.loads(raw[raw.rindex(b'"next":') + 7 : -1])
                    seen += raw.count(b'"power_state"')  # PostgreSQL writes `"key" : value`
                if following is None:
                    break
                params["cursor"] = following
            assert seen == INSTANCES

        assert bare() == INSTANCES
        rounds = paired(
            benchmark,
            api_pages,
            {
                "sql": bare,
                "json": json_pages,
                "store": store_pages,
                "render": lambda: store_pages(render=True),
                "http": lambda: api_pages(parse=False),
            },
            rounds=LIST_ROUNDS,
        )
    close_bare()
    ratio = median(rounds.ratios("sql"))
    label = "SQLite file" if backend == "sqlite" else "PostgreSQL, loopback TCP"
    record(
        benchmark,
        f"S1/{backend}",
        f"service: GET /v1/instances, all {INSTANCES:,} instances in pages of {PAGE:,} (real HTTP on "
        f"loopback, JSON parsed; {label}) ÷ the bare query of the same rows",
        ratio,
        "x",
        target=("<=", TARGET_LIST_RATIO),
        detail=(
            f"API {ms(median(rounds.subject))}; bare {'sqlite3' if backend == 'sqlite' else 'psycopg'} "
            f"keyset query {ms(median(rounds.baselines['sql']))}; in process, the endpoint's "
            f"store.instances_page_json {_share(rounds, 'json')}; the Python path it replaced, "
            f"store.instances_page alone {_share(rounds, 'store')}, with the views' dicts and the JSON body "
            f"{_share(rounds, 'render')}; "
            f"through HTTP with the items left unparsed {_share(rounds, 'http')}; medians of "
            f"{len(rounds.subject)} rounds"
        ),
        raw={"instances": INSTANCES, "page": PAGE, "rounds": len(rounds.subject)},
    )
    assert ratio <= TARGET_LIST_RATIO, f"{ratio:.2f} times the bare query (target {TARGET_LIST_RATIO})"


def _share(rounds: Rounds, baseline: str) -> str:
    """A baseline's median time and its median ratio to the bare query, for the detail column."""
    return f"{ms(median(rounds.baselines[baseline]))} ({median(rounds.between(baseline, 'sql')):.2f}{TIMES})"


@pytest.mark.benchmark(group="S4 service fleet resync")
def bench_service_fleet_resync(benchmark: Any, tmp_path: Path) -> None:
    """100 fake hosts of 100 instances in one process: a full resync of all ÷ the sum of their listings."""
    names = [f"host-{n:03d}" for n in range(RESYNC_HOSTS)]
    for name in names:
        fake_host(tmp_path / f"{name}.json", name, RESYNC_INSTANCES)
    config = write_config(
        tmp_path, "service.toml", f"sqlite:///{tmp_path / 'service.db'}", names, token=new_token()
    )
    threads_before = threading.active_count()
    with Fleet(config) as fleet:
        assert fleet.owned_hosts() == names
        drivers = [fleet._owned[name].driver for name in names]
        peak = {"threads": threading.active_count(), "service": 0}

        def sample(_host: str, _seconds: float) -> None:
            # Called on each host's worker as its resync ends: the threads running mid-resync.
            running = threading.enumerate()
            peak["threads"] = max(peak["threads"], len(running))
            ours = sum(1 for thread in running if thread.name.startswith(("keeper-", "service-")))
            peak["service"] = max(peak["service"], ours)

        fleet.add_sync_listener(sample)

        def resync_all() -> None:
            fleet.resync(timeout=600)

        def list_each() -> None:
            for driver in drivers:
                driver.list_instances()

        rounds = paired(benchmark, resync_all, {"list": list_each}, rounds=RESYNC_ROUNDS)
        total = sum(1 for driver in drivers for _ in driver.list_instances())
    ratio = median(rounds.ratios("list"))
    bound = RESYNC_HOSTS * THREADS_PER_HOST + THREADS_OVER_HOSTS
    record(
        benchmark,
        "S4/fake",
        f"service: full resync of {RESYNC_HOSTS} fake hosts {TIMES} {RESYNC_INSTANCES} instances in one "
        "process ÷ the sum of the hosts' own list_instances()",
        ratio,
        "x",
        target=("<=", TARGET_RESYNC_RATIO),
        detail=(
            f"resync {ms(median(rounds.subject))}, the {RESYNC_HOSTS} listings one after another "
            f"{ms(median(rounds.baselines['list']))} (medians of {len(rounds.subject)} rounds); "
            f"{total:,} instances; threads: {threads_before} before the fleet, at most {peak['threads']} "
            f"while resyncing (bound {bound}: {THREADS_PER_HOST} per host + {THREADS_OVER_HOSTS}), of which "
            f"the keeper's and the service's {peak['service']} (one worker per host, the store's, the "
            f"VCPU sampler's, the feed's, the claim loop's and its pool's, at most {CLAIM_WORKERS}); the "
            "others are the fake driver's own state-file watchers, one a host"
        ),
        raw={
            "threads_peak": peak["threads"],
            "service_threads_peak": peak["service"],
            "threads_before": threads_before,
            "rounds": len(rounds.subject),
        },
    )
    assert peak["threads"] <= bound, f"{peak['threads']} threads while resyncing (bound {bound})"
    assert peak["service"] <= RESYNC_HOSTS + SERVICE_THREADS_OVER_HOSTS, (
        f"{peak['service']} keeper and service threads"
    )
    assert ratio <= TARGET_RESYNC_RATIO, f"{ratio:.2f} times the listings (target {TARGET_RESYNC_RATIO})"
