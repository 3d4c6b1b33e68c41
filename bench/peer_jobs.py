"""The publish -> handler job on another queue, run inside that queue's own virtualenv.

This file imports nothing of the project (its virtualenv has only the peer's packages):
``python peer_jobs.py celery|procrastinate WORKDIR`` starts the peer's worker as a
subprocess, publishes paced at ``PEER_RATE`` events/s for ``PEER_SECONDS`` seconds (the
latency: publish returned -> handler started, both ``time.time()``), then ``PEER_BURST``
events as fast as ``PEER_CALLERS`` concurrent callers can (the sustained publish -> handler
rate), and prints one JSON line of figures. The handler appends ``time sequence`` to a
report file, as the bench plugin does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

RATE = float(os.environ.get("PEER_RATE", "1000"))
SECONDS = float(os.environ.get("PEER_SECONDS", "5"))
BURST = int(os.environ.get("PEER_BURST", "5000"))
CALLERS = int(os.environ.get("PEER_CALLERS", "8"))
TIMEOUT = float(os.environ.get("PEER_TIMEOUT", "120"))

CELERY_APP = """
import os, time
from celery import Celery

app = Celery("peer", broker=os.environ["PEER_BROKER"])
app.conf.update(
    task_ignore_result=True,
    task_default_queue=os.environ["PEER_QUEUE"],
    worker_prefetch_multiplier=64,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_out = None


@app.task(name="handle")
def handle(seq):
    global _out
    now = time.time()
    if _out is None:
        _out = open(os.environ["PEER_REPORT"], "a", buffering=1)
    _out.write(f"{now:.6f} {seq}\\n")
"""

PROCRASTINATE_APP = """
import os, time
import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["PEER_DSN"])
)
_out = None


@app.task(name="handle", queue="peer")
async def handle(seq):
    global _out
    now = time.time()
    if _out is None:
        _out = open(os.environ["PEER_REPORT"], "a", buffering=1)
    _out.write(f"{now:.6f} {seq}\\n")
"""


def spawn(cmd: list[str], work: Path, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    """The peer's worker, its stderr in ``work/log`` (the child keeps its own handle)."""
    with open(work / log, "w") as fh:
        return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=fh)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def handled(report: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    if report.exists():
        for line in report.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.setdefault(int(parts[1]), float(parts[0]))
    return out


def wait_for(report: Path, wanted: set[int], timeout: float = TIMEOUT) -> dict[int, float]:
    deadline = time.monotonic() + timeout
    while True:
        got = handled(report)
        if wanted <= got.keys() or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def figures(
    acks: dict[int, float], burst: list[int], burst_started: float, burst_acked: float, got: dict
) -> dict[str, float]:
    lat = [(got[s] - t) * 1000 for s, t in acks.items() if s in got]
    done = [got[s] for s in burst if s in got]
    return {
        "events": len(acks),
        "delivered": len(lat),
        "p50_ms": round(pct(lat, 0.5), 3),
        "p99_ms": round(pct(lat, 0.99), 3),
        "max_ms": round(max(lat, default=0.0), 3),
        "burst_events": len(burst),
        "burst_delivered": len(done),
        "publish_calls_per_s": round(len(burst) / max(burst_acked - burst_started, 1e-9)),
        "publish_to_handler_events_per_s": round(
            len(done) / max(max(done, default=burst_started) - burst_started, 1e-9)
        ),
    }


def paced(publish, first: int) -> dict[int, float]:  # type: ignore[no-untyped-def]
    acks: dict[int, float] = {}
    total = int(RATE * SECONDS)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publish(first + i)
        acks[first + i] = time.time()
    return acks


def run_celery(work: Path) -> dict[str, float]:
    (work / "peer_celery_app.py").write_text(CELERY_APP)
    report = work / "celery.report"
    report.unlink(missing_ok=True)
    queue = f"listener-bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PEER_QUEUE": queue,
        "PEER_REPORT": str(report),
        "PEER_BROKER": os.environ.get("PEER_BROKER", "redis://127.0.0.1:6379/0"),
    }
    os.environ.update(env)
    sys.path.insert(0, str(work))
    cmd = [sys.executable, "-m", "celery", "-A", "peer_celery_app", "worker", "--pool=solo"]
    cmd += ["-Q", queue, "--loglevel=WARNING", "--without-gossip", "--without-mingle"]
    worker = spawn(cmd, work, env, "celery.log")
    try:
        import peer_celery_app  # type: ignore[import-not-found]

        task = peer_celery_app.handle
        task.apply_async((0,))
        if 0 not in wait_for(report, {0}, 60):
            raise RuntimeError("celery worker did not start; see celery.log")
        acks = paced(lambda s: task.apply_async((s,)), 1)
        burst = list(range(1_000_000, 1_000_000 + BURST))
        started = time.time()
        chunks = [burst[i::CALLERS] for i in range(CALLERS)]
        threads = [
            threading.Thread(target=lambda c=c: [task.apply_async((s,)) for s in c]) for c in chunks
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        acked = time.time()
        got = wait_for(report, set(acks) | set(burst))
        return figures(acks, burst, started, acked, got)
    finally:
        worker.terminate()
        worker.wait(30)
        import redis

        redis.Redis.from_url(env["PEER_BROKER"]).delete(queue)


async def _admin(server: str, sql: str) -> None:
    """``sql`` run on the server's ``postgres`` database (CREATE/DROP DATABASE)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(f"{server}/postgres", autocommit=True) as c:
        await c.execute(sql)


async def _paced_defers(task: Any) -> dict[int, float]:
    """``paced`` for procrastinate: each defer its own task, started on the pace's schedule."""
    acks: dict[int, float] = {}
    pending: list[asyncio.Task[None]] = []

    async def one(seq: int) -> None:
        await task.defer_async(seq=seq)
        acks[seq] = time.time()

    total = int(RATE * SECONDS)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(one(1 + i)))
    await asyncio.gather(*pending)
    return acks


async def _burst_defers(task: Any) -> tuple[list[int], float, float]:
    """The burst deferred by ``CALLERS`` concurrent callers: its sequences, started, acked."""
    burst = list(range(1_000_000, 1_000_000 + BURST))
    queue = list(burst)
    started = time.time()

    async def caller() -> None:
        while queue:
            await task.defer_async(seq=queue.pop())

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return burst, started, time.time()


async def _procrastinate(work: Path) -> dict[str, float]:
    (work / "peer_proc_app.py").write_text(PROCRASTINATE_APP)
    report = work / "procrastinate.report"
    report.unlink(missing_ok=True)
    server = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432")
    name = f"bench_peer_{uuid.uuid4().hex[:10]}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    env = {**os.environ, "PEER_DSN": f"{server}/{name}", "PEER_REPORT": str(report)}
    os.environ.update(env)
    sys.path.insert(0, str(work))
    worker = None
    try:
        import peer_proc_app  # type: ignore[import-not-found]

        app = peer_proc_app.app
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            cmd = [sys.executable, "-m", "procrastinate", "--app=peer_proc_app.app", "worker"]
            cmd += ["--queues=peer", "--concurrency=1"]
            worker = spawn(cmd, work, env, "procrastinate.log")
            task = peer_proc_app.handle
            await task.defer_async(seq=0)
            got = await asyncio.to_thread(wait_for, report, {0}, 60)
            if 0 not in got:
                raise RuntimeError("procrastinate worker did not start; see procrastinate.log")
            acks = await _paced_defers(task)
            burst, started, acked = await _burst_defers(task)
            got = await asyncio.to_thread(wait_for, report, set(acks) | set(burst))
            return figures(acks, burst, started, acked, got)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    which, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    result = run_celery(work) if which == "celery" else asyncio.run(_procrastinate(work))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
