"""Run the benchmark suite and write the results table: what ``make bench`` does.

Usage: ``python tests/benchmarks/run.py [PYTEST ARGS...]`` (e.g. ``-k fake`` for a subset).
The JSON results go to ``.cache/benchmarks/results.json``; ``report.py`` turns them into
``docs/performance-results.inc``, which ``docs/performance.rst`` includes. A subset run (any
extra argument) writes the JSON but leaves the published table alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / ".cache" / "benchmarks" / "results.json"
TABLE = REPO / "docs" / "performance-results.inc"


def main(argv: list[str]) -> int:
    """Run pytest on the ``bench_*.py`` modules, then the report; return an exit status."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    status = pytest.main(
        [
            str(HERE),
            "-o", "python_files=bench_*.py",
            "-o", "python_functions=bench_*",
            "-p", "benchkit",
            "-p", "no:cacheprovider",
            "-q",
            f"--benchmark-json={RESULTS}",
            "--benchmark-columns=min,median,max,rounds",
            "--benchmark-sort=name",
            "--benchmark-group-by=group",
            *argv,
        ]
    )  # fmt: skip
    elapsed = time.monotonic() - began
    if not RESULTS.exists():
        return int(status) or 1
    results = json.loads(RESULTS.read_text())
    results.setdefault("powerdrivers", {})["suite_s"] = elapsed
    RESULTS.write_text(json.dumps(results, indent=2))
    from report import main as report

    report([str(RESULTS), str(TABLE) if not argv else "-"])
    print(f"benchmark suite: {elapsed:.0f} s")
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
