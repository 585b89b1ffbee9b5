"""The keeper's store (issue 12's targets 2 and 4), on an SQLite file, against raw sqlite3 calls.

K2: an event's observation stored and its history record committed (``record_observation``,
one transaction, with a retention of 100, so that most appends also trim the oldest record),
p99, beside one raw ``INSERT`` + ``COMMIT`` of a row of the same width on a
file with the same settings (WAL, ``synchronous = NORMAL``), in the same rounds.

K4: one instance's newest 100 history records (``history``), with 1,000,000 records in the
store (1,000 instances of 1,000 records, the default retention), beside the same ``SELECT`` on
a raw sqlite3 connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from benchkit import median, ms, paired, percentile, record
from sqlalchemy import create_engine, insert

from powerdrivers import InstanceReading, PowerState
from powerdrivers.keeper import Cause, SqlStore
from powerdrivers.keeper._schema import history, instances

COMMIT_ROUNDS = 400
TARGET_COMMIT_P99_MS = 50.0
QUERY_ROUNDS = 200
TARGET_QUERY_MS = 10.0
INSTANCES = 1000
RECORDS_EACH = 1000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: K2's retention: past the first 100 rounds, every append also trims the oldest record.
TRIMMING_RETENTION = 100


@pytest.fixture
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SqlStore]:
    retention = getattr(request, "param", RECORDS_EACH)
    opened = SqlStore(f"sqlite:///{tmp_path / 'keeper.db'}", retention=retention)
    opened.register_host("h1", "fake", None)
    yield opened
    opened.close()


def _raw_connection(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


@pytest.mark.benchmark(group="K2 keeper store commit")
@pytest.mark.parametrize("store", [TRIMMING_RETENTION], indirect=True)
def bench_keeper_observation_committed(benchmark: Any, store: SqlStore, tmp_path: Path) -> None:
    """An observation of a state change, from the call to its committed history record."""
    states = [PowerState.RUNNING, PowerState.SHUTOFF]
    turn = {"n": 0}

    def observe() -> None:
        n = turn["n"] = turn["n"] + 1
        reading = InstanceReading(
            "i-1", "one", states[n % 2], None, states[n % 2].value, "bench", T0 + timedelta(seconds=n)
        )
        store.record_observation("h1", reading, previous=states[(n + 1) % 2], cause=Cause.OUT_OF_BAND)

    raw = _raw_connection(tmp_path / "raw.db")
    raw.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, instance_id TEXT, time TEXT, detail TEXT)")

    def raw_commit() -> None:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT INTO records (instance_id, time, detail) VALUES ('i-1', '2026-01-01', 'bench')")
        raw.execute("COMMIT")

    rounds = paired(benchmark, observe, {"raw": raw_commit}, rounds=COMMIT_ROUNDS)
    raw.close()
    p99 = percentile(rounds.subject, 99)
    record(
        benchmark,
        "K2/sqlite",
        "keeper store: event → history record committed (SQLite file, WAL), p99",
        p99 * 1000,
        "ms",
        target=("<=", TARGET_COMMIT_P99_MS),
        detail=(
            f"p50 {ms(median(rounds.subject))}, max {ms(max(rounds.subject))}; one raw sqlite3 "
            f"INSERT + COMMIT: p50 {ms(median(rounds.baselines['raw']))}, p99 "
            f"{ms(percentile(rounds.baselines['raw'], 99))}; ratio to it (median) "
            f"{median(rounds.ratios('raw')):.1f}; {len(rounds.subject)} rounds, retention "
            f"{TRIMMING_RETENTION} (each append past the first 100 trims)"
        ),
        raw={"p50_s": median(rounds.subject), "p99_s": p99, "rounds": len(rounds.subject)},
    )


def _fill(url: str) -> None:
    """Write 1,000,000 history records (1,000 instances of 1,000) straight into the tables."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            insert(instances),
            [
                {
                    "id": f"i-{n:04d}",
                    "host": "h1",
                    "name": f"vm-{n:04d}",
                    "power_state": "running",
                    "native_state": "running",
                    "observed_at": T0,
                    "policy": "manual",
                    "stale": False,
                    "quarantined": False,
                    "failures": 0,
                    "records": RECORDS_EACH,
                    "change_seq": 0,
                }
                for n in range(INSTANCES)
            ],
        )
        # Interleaved as a live store's would be: record after record, every instance in turn.
        for first in range(0, RECORDS_EACH, 100):
            connection.execute(
                insert(history),
                [
                    {
                        "instance_id": f"i-{n:04d}",
                        "host": "h1",
                        "time": T0 + timedelta(seconds=step),
                        "kind": "observed",
                        "from_state": "running",
                        "to_state": "shutoff",
                        "native_state": "shutoff",
                        "cause": "crash",
                    }
                    for step in range(first, first + 100)
                    for n in range(INSTANCES)
                ],
            )
    engine.dispose()


@pytest.mark.benchmark(group="K4 keeper history query")
def bench_keeper_history_query(benchmark: Any, store: SqlStore, tmp_path: Path) -> None:
    """One instance's newest 100 records among 1,000,000."""
    _fill(f"sqlite:///{tmp_path / 'keeper.db'}")
    target = f"i-{INSTANCES // 2:04d}"
    raw = _raw_connection(tmp_path / "keeper.db")
    sql = "SELECT * FROM history WHERE instance_id = ? ORDER BY id DESC LIMIT 100"
    total = raw.execute("SELECT count(*) FROM history").fetchone()[0]
    assert total == INSTANCES * RECORDS_EACH

    def query() -> None:
        assert len(store.history(target, limit=100)) == 100

    def raw_query() -> None:
        assert len(raw.execute(sql, (target,)).fetchall()) == 100

    rounds = paired(benchmark, query, {"raw": raw_query}, rounds=QUERY_ROUNDS)
    raw.close()
    p99 = percentile(rounds.subject, 99)
    record(
        benchmark,
        "K4/1000000",
        f"keeper store: one instance's newest 100 history records, {total:,} records in the store, p99",
        p99 * 1000,
        "ms",
        target=("<=", TARGET_QUERY_MS),
        detail=(
            f"p50 {ms(median(rounds.subject))}; the same SELECT on a raw sqlite3 connection: p50 "
            f"{ms(median(rounds.baselines['raw']))}; ratio to it (median) "
            f"{median(rounds.ratios('raw')):.1f}; {len(rounds.subject)} rounds"
        ),
        raw={"p50_s": median(rounds.subject), "p99_s": p99, "records": total, "rounds": len(rounds.subject)},
    )
