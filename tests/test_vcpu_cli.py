"""The CLI's stats command: why a VCPU is blocked, and every running instance from one bulk sample."""

from __future__ import annotations

from typing import Any

import pytest
from cli_support import run, run_json

BREAKDOWN = ("halted", "halt_exits", "io_exits", "mmio_exits")


def assert_consistent(vcpu: dict[str, Any]) -> None:
    assert vcpu["running"] + vcpu["blocked"] + vcpu["waiting"] == pytest.approx(1.0, abs=1e-3)
    assert 0 < vcpu["halted"] <= vcpu["blocked"]
    assert all(vcpu[key] is not None and vcpu[key] >= 0 for key in BREAKDOWN)


pytestmark = pytest.mark.usefixtures("state")


def test_stats_json_says_why_blocked(capsys: pytest.CaptureFixture[str]) -> None:
    stats = run_json(capsys, "stats", "web-1", "--window", "0.1")
    assert stats["name"] == "web-1" and stats["window_s"] == 0.1
    for vcpu in stats["vcpus"]:
        assert set(vcpu) == {"vcpu", "running", "blocked", "waiting", "window_s", *BREAKDOWN}
        assert_consistent(vcpu)


def test_stats_table_shows_the_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", "web-1", "--window", "0.1")
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[4:] == ["HALTED", "HALT/S", "IO/S", "MMIO/S"]
    assert rows and all(len(row.split()) == 8 and "-" not in row.split() for row in rows)


def test_stats_all_reports_every_running_instance(capsys: pytest.CaptureFixture[str]) -> None:
    running = {row["id"] for row in run_json(capsys, "list") if row["power_state"] == "running"}
    sampled = run_json(capsys, "stats", "--all", "--window", "0.1")
    assert sampled["window_s"] == 0.1
    assert {instance["id"] for instance in sampled["instances"]} == running
    for instance in sampled["instances"]:
        assert instance["window_s"] >= 0.1 and instance["vcpus"]
        for vcpu in instance["vcpus"]:
            assert_consistent(vcpu)
    code, out, _ = run(capsys, "stats", "--all", "--window", "0.05")
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:3] == ["ID", "NAME", "VCPU"]
    vcpus = sum(len(instance["vcpus"]) for instance in sampled["instances"])
    assert len(rows) == vcpus


@pytest.mark.parametrize("argv", [["stats"], ["stats", "web-1", "--all"]])
def test_stats_takes_an_instance_or_all(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("powerdrivers: error: ") and "--all" in lines[0]


@pytest.mark.parametrize("window", ["0", "-1", "nan", "inf", "1e400"])
def test_stats_all_refuses_a_bad_window(capsys: pytest.CaptureFixture[str], window: str) -> None:
    code, out, err = run(capsys, "stats", "--all", "--window", window)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1
