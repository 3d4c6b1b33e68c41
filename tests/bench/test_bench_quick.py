"""``python -m bench --quick`` still runs every scenario: the CI guard of the benchmark suite.

It checks that the bench runs, never its figures (a shared CI box says nothing about speed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[2]


def test_quick_bench_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "quick"
    assert set(results["scenarios"]) == set(SCENARIOS)
    for key, scenario in results["scenarios"].items():
        assert scenario["ran"], f"scenario {key}: {scenario['error']}"
        assert scenario["rows"], f"scenario {key} has no figures"
    rows = {r["key"] for s in results["scenarios"].values() for r in s["rows"]}
    assert {"5b", "8b", "12"} <= rows, rows  # issue #19's, beside their scenario's first row
    by_key = {r["key"]: r for s in results["scenarios"].values() for r in s["rows"]}
    for key in ("5", "5b"):  # CPU per event, the before/after figure of the publish path
        details = by_key[key]["details"]
        assert details["api_server_cpu_us_per_event"] > 0, details
        assert "alert_server_cpu_us_per_event" in details, details
        assert details["notifies_per_event"] > 0, details  # the alert server heard of them
    # Target 1's measured reason: the event loop's thread, ours beside the echo server's.
    details = by_key["1"]["details"]
    assert details["api_server_main_thread_us_per_event"] > 0, details
    assert details["api_server_main_thread_us_per_event"] <= details["api_server_cpu_us_per_event"]
    for name in (
        "echo_calls_per_s",
        "echo_main_thread_us_per_call",
        "sqlite_insert_rows_per_s",
        "sqlite_read_rows_per_s",
    ):
        assert results["limits"][name] > 0
