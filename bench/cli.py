"""Runs the scenarios, prints the table and writes ``bench/results.json``.

Exit status: 0 when every scenario ran (whatever its figures, so CI can run ``--quick`` as a
smoke test), 1 when one crashed; ``--check`` also fails on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import echo, load, stages
from bench.groups import GROUPS, RUNS
from bench.load import LoadResult, LoadSpec
from bench.scenarios import FULL, QUICK, SCENARIOS, Bench, Row, Sizes

RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),  # at the end; other work on the box skews figures
        "event_loop": echo.event_loop(),  # the servers' and the echo server's
    }


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def table(rows: list[Row], errors: dict[str, str]) -> str:
    """The results as a Markdown table (readable in a terminal, pasteable into docs)."""
    lines = [
        "| # | measure | result | target | met | physical limit | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        limit = f"{row.limit_name} {_fmt(row.limit)}" if row.limit_name else ""
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        lines.append(
            f"| {row.key} | {row.measure} | {_fmt(row.value)} {row.unit} | {row.target} "
            f"| {met} | {limit} | {ratio} |"
        )
    for key, error in errors.items():
        last = error.strip().splitlines()[-1]
        lines.append(f"| {key} | {SCENARIOS[key]} | error: {last} | | | | |")
    return "\n".join(lines)


def cpu_table(rows: list[Row], limits: dict[str, float]) -> str:
    """Each server's CPU per acked event under the rows' loads (``Bench.measured``), after
    the echo server's per call at scenario 5's paced rate in the same run."""
    echo = limits.get("echo_paced_cpu_us_per_call", 0.0)
    echo_main = limits.get("echo_main_thread_us_per_call", 0.0)
    lines = [
        f"echo server CPU per call at scenario 5's rate: {echo:.1f} µs; its main thread's "
        f"per call under target 1's load: {echo_main:.1f} µs\n",
        "| # | measure | API server CPU µs/event | its main thread | alert server CPU µs/event "
        "| nudges/event (Notify + NotifyStream) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        d = row.details
        if "api_server_cpu_us_per_event" in d:
            lines.append(
                f"| {row.key} | {row.measure} | {d['api_server_cpu_us_per_event']} "
                f"| {d.get('api_server_main_thread_us_per_event', '')} "
                f"| {d['alert_server_cpu_us_per_event']} | {d.get('notifies_per_event', '')} |"
            )
    return "\n".join(lines) if len(lines) > 3 else ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks it runs (CI)")
    parser.add_argument(
        "--db", default="sqlite", help="sqlite (default) or a postgresql://user@host:port URL"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenario numbers (their whole group runs), e.g. 2 or 1,5",
    )
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one of bench.scenarios.Sizes, e.g. large_idle_instances=2000 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def sizes(args: argparse.Namespace) -> Sizes:
    """The sizes of ``--quick`` or the full run, with ``--size`` overrides."""
    base = QUICK if args.quick else FULL
    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for item in args.size:
        name, _, value = item.partition("=")
        if name not in types:
            raise SystemExit(f"unknown size {name!r}: one of {', '.join(sorted(types))}")
        changes[name] = types[name](value)
    return dataclasses.replace(base, **changes)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    wanted = {k.strip() for k in args.only.split(",") if k.strip()} or set(SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    # A group's setup is shared, so asking for one of its scenarios runs (and reports) all.
    wanted = {key for keys in GROUPS.values() if wanted & set(keys) for key in keys}
    load_before = os.getloadavg()
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, load.warm)

        async def run_load(spec: LoadSpec) -> LoadResult:
            return await loop.run_in_executor(pool, load.run, spec)

        bench = Bench(sizes(args), args.db, workdir, run_load)
        errors: dict[str, str] = {}
        print("measuring the machine's limits ...", flush=True)
        await bench.machine_limits()
        for group, keys in GROUPS.items():
            if not wanted & set(keys):
                continue
            print(f"running {group} ({', '.join(keys)}) ...", flush=True)
            try:
                await RUNS[group](bench)
            except Exception:
                trace = traceback.format_exc()
                print(trace, file=sys.stderr)
                for key in keys:
                    if not any(r.key == key for r in bench.rows):
                        errors[key] = trace
    order = {k: i for i, k in enumerate(SCENARIOS)}
    rows = sorted(bench.rows, key=lambda r: (order.get(r.key.rstrip("ab"), 99), r.key[::-1]))
    scenarios = _scenarios(rows, wanted, errors)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "size_overrides": args.size,
        "db": "sqlite" if args.db == "sqlite" else "postgresql",
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {**machine(), "load_average_at_start": load_before},
        "limits": bench.limits,
        "scenarios": scenarios,
        "table": table(rows, errors),
        "cpu_table": cpu_table(rows, bench.limits),
        "latency_stages": bench.stages,
        "stages_table": stages.table(bench.stages) if bench.stages else "",
    }


def _scenarios(rows: list[Row], wanted: set[str], errors: dict[str, str]) -> dict[str, Any]:
    """Each scenario asked for: whether it ran and met its targets, and its rows."""
    scenarios: dict[str, Any] = {}
    for key in SCENARIOS:
        if key not in wanted:
            continue
        mine = [r for r in rows if r.key.rstrip("ab") == key]
        scenarios[key] = {
            "measure": SCENARIOS[key],
            "ran": key not in errors and bool(mine),
            "met": all(r.met is not False for r in mine) if mine else False,
            "error": errors.get(key, ""),
            "rows": [
                {
                    "key": r.key,
                    "measure": r.measure,
                    "value": r.value,
                    "unit": r.unit,
                    "target": r.target,
                    "met": r.met,
                    "limit_name": r.limit_name,
                    "limit": r.limit,
                    "ratio": r.ratio,
                    "details": r.details,
                }
                for r in mine
            ],
        }
    return scenarios


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="listener-bench-"))
    try:
        results = asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    m = results["machine"]
    print(
        f"\n{m['nproc']} x {m['cpu_model']}, Python {m['python']} on {m['event_loop']}, "
        f"{results['db']}, "
        f"{results['mode']} run in {results['seconds']} s\n"
    )
    print(results["table"])
    if results["cpu_table"]:
        print("\n" + results["cpu_table"])
    if results["stages_table"]:
        print("\n" + results["stages_table"])
    print(f"\nwritten to {args.out}")
    ran = all(s["ran"] for s in results["scenarios"].values())
    met = all(s["met"] for s in results["scenarios"].values())
    return 0 if ran and (met or not args.check) else 1
