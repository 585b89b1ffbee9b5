"""A state file the system will not read, lock or write is an "io" HypervisorError that names the file.

Not a traceback, and not "corrupt": nothing is wrong with the document, and
the message says which file and what the system said. These run as root
here, where permissions stop nothing, so the failures come from the file
system's shape: a symlink loop, a directory where a file should be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_helpers import DriverFactory
from powerdrivers_fake._processes import process_alive, process_start, this_process

import powerdrivers
from powerdrivers import HypervisorError, PowerState


def test_a_state_path_that_cannot_be_read_is_an_io_error(make_driver: DriverFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.symlink_to(path)  # stat() fails with ELOOP, not FileNotFoundError
    with pytest.raises(HypervisorError) as raised:
        make_driver(f"fake://{path}")
    assert raised.value.code == "io"
    assert str(raised.value) == f"fake state file {path} cannot be read: Too many levels of symbolic links"


def test_a_lock_file_that_cannot_be_opened_is_an_io_error(make_driver: DriverFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    lock = tmp_path / "state.json.lock"
    lock.mkdir()
    with pytest.raises(HypervisorError) as raised:
        make_driver(f"fake://{path}")
    assert raised.value.code == "io"
    assert str(raised.value) == f"fake state file {lock} cannot be locked: Is a directory"
    assert not path.exists()


_WRITE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
import powerdrivers

driver = powerdrivers.load_driver("fake", sys.argv[1])
driver.list_instances()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
try:
    driver.pause("web-1")
except powerdrivers.HypervisorError as error:
    print(error.code)
    print(error)
finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
driver.close()
"""


def test_a_state_file_that_cannot_be_written_is_an_io_error_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    done = subprocess.run(
        [sys.executable, "-c", _WRITE_UNDER_A_FILE_SIZE_LIMIT, f"fake://{path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["io", f"fake state file {path} cannot be written: File too large"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["state.json", "state.json.lock"]
    with powerdrivers.load_driver("fake", f"fake://{path}") as driver:
        assert driver.get_instance("web-1").power_state is PowerState.RUNNING


def test_this_process_is_alive_and_its_start_time_names_it() -> None:
    pid, started = this_process()
    assert pid == os.getpid()
    assert started is not None
    assert started == process_start(pid)
    assert process_alive(pid, started)
    assert process_alive(pid, None)
    # The same pid with another start time is a reused pid: another process.
    assert not process_alive(pid, started + 1)


@pytest.mark.parametrize("pid", [0, -1])
def test_no_process_has_a_pid_below_one(pid: int) -> None:
    assert not process_alive(pid, None)


def test_a_process_that_exited_but_is_not_yet_reaped_does_not_run() -> None:
    with subprocess.Popen(["true"]) as child:
        # Not reaped yet: the pid still answers signal 0, but /proc says it is a zombie.
        deadline = time.monotonic() + 10
        while _state(child.pid) != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        assert not process_alive(child.pid, None)
        child.wait()
    assert not process_alive(child.pid, None)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as stat_file:
        return stat_file.read().rpartition(b")")[2].split()[0].decode()
