"""The tests' throwaway PostgreSQL cluster: its own port and folder, a password, and nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postgres_cluster import USER, PostgresCluster

#: Starts a cluster, says where, then waits to be killed.
CHILD = """
import sys, time
from postgres_cluster import PostgresCluster
cluster = PostgresCluster()
cluster.start()
print(cluster.root, cluster.postmaster_pid(), flush=True)
time.sleep(600)
"""


def test_the_session_cluster_takes_a_password_over_tcp_on_its_own_port(postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    assert url.startswith(f"postgresql+psycopg://{USER}:{postgres.password}@127.0.0.1:{postgres.port}/")
    assert postgres.port != 5432
    with postgres.connect() as connection:
        port, listening = connection.execute(
            "SELECT current_setting('port'), current_setting('listen_addresses')"
        ).fetchone() or ("", "")
    assert (port, listening) == (str(postgres.port), "127.0.0.1")
    import psycopg  # here, not at the top: without it the fixture skips (or fails under CI=true)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=postgres.port, user=USER, password="wrong", dbname="postgres")


def test_a_test_process_killed_by_sigkill_leaves_no_server_nor_folder(postgres: PostgresCluster) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    root, pid = child.stdout.readline().split()
    assert Path(root).is_dir() and Path(f"/proc/{pid}").exists()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    deadline = time.monotonic() + 20
    while (Path(root).exists() or Path(f"/proc/{pid}").exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the killed test's server still runs"
    assert not Path(root).exists(), "the killed test's cluster folder is still there"
