"""``make bench-peers``: our publish -> handler figures as ratios to Celery + Redis and to
procrastinate (PostgreSQL), measured in the same run on the same box.

Each peer gets its own virtualenv under ``.bench/peers/`` (created once, pinned versions;
never a dependency of the service) and runs :mod:`bench.peer_jobs` there. Ours are the
bench's scenarios 3 (publish -> plugin, sustained) and 5 (latency at 1,000 events/s), on
SQLite and on PostgreSQL. A ratio is ours / theirs: below 1 is better for a latency, above
1 for a rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".bench" / "peers"
RESULTS = REPO / "bench" / "peers.json"
PEERS: dict[str, list[str]] = {
    "celery": ["celery==5.7.0", "redis==8.1.0", "packaging==26.4"],
    "procrastinate": ["procrastinate==3.10.0", "psycopg[binary,pool]==3.3.9"],
}
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def venv(name: str) -> Path:
    """The peer's virtualenv, created and filled on first use."""
    home = WORK / name / "venv"
    python = home / "bin" / "python"
    stamp = home / "installed.txt"
    wanted = "\n".join(PEERS[name])
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEERS[name]], check=True)
        stamp.write_text(wanted)
    return python


def run_peer(name: str, env: dict[str, str]) -> dict[str, Any]:
    python = venv(name)
    proc = subprocess.run(
        [str(python), str(REPO / "bench" / "peer_jobs.py"), name, str(WORK / name)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_ours(db: str, quick: bool) -> dict[str, Any]:
    out = WORK / f"ours-{'sqlite' if db == 'sqlite' else 'postgresql'}.json"
    cmd = [sys.executable, "-m", "bench", "--only", "3,5", "--db", db, "--out", str(out)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"bench on {db} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    results = json.loads(out.read_text())
    rows = {r["key"]: r for s in results["scenarios"].values() for r in s["rows"]}
    five = rows["5"]["details"]
    return {
        "p50_ms": rows["5"]["value"],
        "p99_ms": five["p99_ms"],
        "max_ms": five["max_ms"],
        "publish_to_handler_events_per_s": rows["3"]["value"],
    }


MEASURES = (
    ("p50_ms", "latency p50 at 1,000/s (ms)"),
    ("p99_ms", "latency p99 at 1,000/s (ms)"),
    ("max_ms", "latency max at 1,000/s (ms)"),
    ("publish_to_handler_events_per_s", "publish -> handler, sustained (events/s)"),
)


def table(ours: dict[str, dict[str, Any]], peers: dict[str, dict[str, Any]]) -> str:
    head = "| measure | " + " | ".join(f"ours ({db})" for db in ours)
    head += "".join(f" | {p} | ours/{p}" for p in peers) + " |"
    lines = [head, "|" + "---|" * (1 + len(ours) + 2 * len(peers))]
    for key, label in MEASURES:
        cells = [f"{ours[db].get(key, 0):,.2f}" for db in ours]
        for theirs in peers.values():
            value = theirs.get(key, 0.0)
            ratios = "/".join(
                f"{ours[db].get(key, 0) / value:.2f}" if value else "-" for db in ours
            )
            cells += [f"{value:,.2f}", ratios]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks it runs")
    parser.add_argument("--pg", default=PG, help="PostgreSQL server for ours and procrastinate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    env = {"PEER_PG": args.pg.rsplit("/", 1)[0]}
    if args.quick:
        env.update(PEER_SECONDS="0.5", PEER_BURST="300")
    started = time.perf_counter()
    load_before = os.getloadavg()
    ours = {"sqlite": run_ours("sqlite", args.quick), "postgresql": run_ours(args.pg, args.quick)}
    peers = {name: run_peer(name, env) for name in PEERS}
    text = table(ours, peers)
    results = {
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_at_start": load_before,
        "load_average_at_end": os.getloadavg(),
        "ours": ours,
        "peers": peers,
        "versions": PEERS,
        "table": text,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"\nload average {load_before} -> {results['load_average_at_end']}; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
