"""The publishers side by side: Python ``Publisher``, ``SyncPublisher``, the Java
``ListenerPublisher`` and its ``listener-publish`` pipe, against one API server, each as a ratio
to the same server fed pre-built 500-event batches one call at a time (the shape every
publisher sends, with nothing of a publisher's own work).

    .venv/bin/python -m bench.publishers [--events 100000] [--rounds 3] [--db sqlite|URL]

Rounds interleave the methods so a change in the machine's load hits them alike; the table
gives each method's median. Needs ``make java`` (run first when the jar is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench.procs import REPO, Servers, database
from listener.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from listener_client import Publisher, SyncPublisher

JAVA = REPO / "clients" / "java" / "build"
BATCH = 500


def event(n: int) -> event_pb2.ListenerEvent:
    """The TASK_FAIL event the Java bench main publishes too (same fields, same size)."""
    return event_pb2.ListenerEvent(
        source="master-1:5678",
        task_fail=event_pb2.TaskRun(
            project_name="etl", task_name=f"t{n}", task_instance_id=n, workflow_instance_id=1
        ),
    )


async def raw_batches(addr: str, count: int) -> float:
    """The ceiling: pre-built PublishEvents requests, one in flight, as fast as they return."""
    requests = [
        event_service_pb2.PublishEventsRequest(
            events=[event(i) for i in range(start, min(count, start + BATCH))],
            request_id=str(uuid.uuid4()),
        )
        for start in range(0, count, BATCH)
    ]
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        started = time.perf_counter()
        for request in requests:
            await stub.PublishEvents(request, timeout=60)
        return time.perf_counter() - started


async def python_async(addr: str, count: int) -> float:
    events = [event(i) for i in range(count)]
    async with Publisher(addr) as publisher:
        started = time.perf_counter()
        for one in events:
            await publisher.publish(one)
        await publisher.flush()
        return time.perf_counter() - started


async def python_sync(addr: str, count: int) -> float:
    events = [event(i) for i in range(count)]

    def run() -> float:
        with SyncPublisher(addr) as publisher:
            started = time.perf_counter()
            for one in events:
                publisher.publish(one)
            publisher.flush()
            return time.perf_counter() - started

    return await asyncio.to_thread(run)


def _java_classpath() -> str:
    """The launcher's class path (the jar plus Debian's jars), read from the launcher."""
    for line in (JAVA / "listener-publish").read_text().splitlines():
        if " -cp " in line:
            return line.split('"')[1].replace("$DIR", str(JAVA))
    raise RuntimeError("no class path in the launcher")


async def java_library(addr: str, count: int) -> float:
    """ListenerPublisher in a JVM, timed inside it after 20,000 untimed events (JVM start-up
    and JIT warm-up left out: a scheduler's publisher runs for days)."""
    proc = await asyncio.create_subprocess_exec(
        "java",
        "-cp",
        _java_classpath(),
        "io.listener.client.BenchMain",
        addr,
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"BenchMain exited with {proc.returncode}")
    return float(json.loads(out.decode().strip().splitlines()[-1])["seconds"])


async def java_pipe(addr: str, count: int) -> float:
    """``listener-publish`` end to end: JVM start-up, JSON parsing, printing every result."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "events.jsonl"
        with source.open("w") as out:
            for i in range(count):
                payload = {"project_name": "etl", "task_name": f"t{i}", "task_instance_id": i}
                out.write(json.dumps({"source": "master-1:5678", "task_fail": payload}) + "\n")
        with source.open() as stdin:
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                str(JAVA / "listener-publish"),
                "--server",
                addr,
                stdin=stdin,
                stdout=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()
            elapsed = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"listener-publish exited with {proc.returncode}")
    return elapsed


METHODS: dict[str, Callable[[str, int], Awaitable[float]]] = {
    "raw PublishEvents, 500 a call, one in flight": raw_batches,
    "Python Publisher (asyncio)": python_async,
    "Python SyncPublisher (thread)": python_sync,
    "Java ListenerPublisher": java_library,
    "Java listener-publish (pipe, JVM start incl.)": java_pipe,
}


async def measure(events: int, rounds: int, db: str) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        async with database(db, Path(tmp)) as db_url:
            servers = Servers(db_url, Path(tmp))
            await servers.start_both()
            try:
                for _ in range(rounds):
                    for name, method in METHODS.items():
                        seconds[name].append(await method(servers.api_addr, events))
            finally:
                await asyncio.to_thread(servers.stop)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publishers", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", default="sqlite")
    args = parser.parse_args()
    subprocess.run(["make", "java"], cwd=REPO, check=True)  # a no-op when the jar is fresh
    seconds = asyncio.run(measure(args.events, args.rounds, args.db))
    ceiling = args.events / statistics.median(seconds[next(iter(METHODS))])
    print(f"{args.events} events a run, {args.rounds} rounds, db {args.db.split(':')[0]}")
    print("| method | events/s (median) | runs | vs raw batches |")
    print("|---|---:|---|---:|")
    for name, runs in seconds.items():
        rate = args.events / statistics.median(runs)
        each = ", ".join(f"{args.events / s:,.0f}" for s in runs)
        print(f"| {name} | {rate:,.0f} | {each} | {rate / ceiling:.2f} |")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average at the end: {' '.join(load)}")


if __name__ == "__main__":
    main()
