"""The files beside a state file: its mode, temporary files killed writers leave, and no file for a bad URI.

Hardening issue, item 7: "The state file turns 0600 on every write; *.tmp files are left behind
after kills; a .lock file is created beside any path named in a URI, even one that is then rejected."
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_helpers import DriverFactory

from powerdrivers import HypervisorError, InvalidURI, PowerDriversError, PowerState

_SEED_A_BIG_STATE = """
import sys
import powerdrivers

powerdrivers.load_driver("fake", sys.argv[1], seed="empty", instances=60000).close()
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    """The pid of a process that has run and been reaped."""
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(process.stdout)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o660])
def test_the_state_file_keeps_its_mode_across_writes(
    make_driver: DriverFactory, tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "state.json"
    driver = make_driver(f"fake://{path}")
    driver.list_instances()
    path.chmod(mode)
    driver.pause("web-1")
    assert driver.get_instance("web-1").power_state is PowerState.PAUSED
    assert _mode(path) == mode
    driver.unpause("web-1")
    assert _mode(path) == mode


def test_a_new_state_file_is_created_as_any_new_file_is(make_driver: DriverFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    umask = os.umask(0o022)
    os.umask(umask)
    make_driver(f"fake://{path}").list_instances()
    assert _mode(path) == 0o666 & ~umask


def test_a_writer_killed_mid_write_leaves_nothing_the_next_one_keeps(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    writer = subprocess.Popen([sys.executable, "-c", _SEED_A_BIG_STATE, f"fake://{path}"])
    try:
        deadline = time.monotonic() + 60
        while not any(entry.suffix == ".tmp" for entry in tmp_path.iterdir()):
            assert writer.poll() is None, "the writer finished before it could be killed mid-write"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(30)
    leftovers = [entry for entry in tmp_path.iterdir() if entry.suffix == ".tmp"]
    assert leftovers and not path.exists()
    driver = make_driver(f"fake://{path}")
    assert {reading.name for reading in driver.list_instances()} >= {"web-1", "legacy-db"}
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["state.json", "state.json.lock"]


def test_only_left_behind_temporaries_of_this_state_file_are_removed(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    dead, live = _dead_pid(), os.getpid()
    removed = [f"state.json.{dead}.0a1b2c3d.tmp"]
    kept = [
        f"state.json.{live}.0a1b2c3d.tmp",  # a live writer's, and recent
        f"other.json.{dead}.0a1b2c3d.tmp",  # another state file's
        f"state.json.bak.{dead}.0a1b2c3d.tmp",
        "state.json.bak",
        "notes.tmp",
    ]
    for name in removed + kept:
        (tmp_path / name).write_text("{")
    old = tmp_path / f"state.json.{live}.99999999.tmp"
    old.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    removed.append(old.name)
    make_driver(f"fake://{tmp_path / 'state.json'}").list_instances()
    names = {entry.name for entry in tmp_path.iterdir()}
    assert names & set(removed) == set()
    assert names >= set(kept)


def _fifo(directory: Path) -> str:
    os.mkfifo(directory / "pipe.json")
    return f"fake://{directory / 'pipe.json'}"


def _file(directory: Path, name: str, content: str) -> str:
    (directory / name).write_text(content)
    return f"fake://{directory / name}"


@pytest.mark.parametrize(
    ("make_uri", "error"),
    [
        (lambda d: _file(d, "passwd", "root:x:0:0:root:/root:/bin/bash\n"), HypervisorError),
        (lambda d: _file(d, "list.json", "[1, 2, 3]"), HypervisorError),
        (
            lambda d: _file(d, "odd.json", '{"format": 1, "seq": 0, "instances": {"x": {}}, "events": []}'),
            HypervisorError,
        ),
        (_fifo, HypervisorError),
        (lambda d: f"fake://{d}/state.json/", InvalidURI),
        (lambda d: f"fake://{d}/sub", InvalidURI),
        (lambda d: f"fake://{d}/state%00.json", InvalidURI),
        (lambda d: f"fake://{d}/missing/state.json", HypervisorError),
        (lambda d: f"fake://{d}/{'x' * 300}.json", PowerDriversError),
    ],
    ids=[
        "not-json",
        "not-a-document",
        "malformed",
        "fifo",
        "trailing-slash",
        "directory",
        "nul",
        "missing-directory",
        "name-too-long",
    ],
)
def test_a_rejected_uri_creates_no_file(
    make_driver: DriverFactory,
    tmp_path: Path,
    make_uri: Callable[[Path], str],
    error: type[PowerDriversError],
) -> None:
    (tmp_path / "sub").mkdir()
    uri = make_uri(tmp_path)
    before = {entry.name: entry.stat().st_mtime_ns for entry in tmp_path.iterdir()}
    with pytest.raises(error):
        make_driver(uri)
    assert {entry.name: entry.stat().st_mtime_ns for entry in tmp_path.iterdir()} == before
    assert list((tmp_path / "sub").iterdir()) == []
