"""The machine's own limits, measured in the same run as the servers.

A bare gRPC echo server (``bench.echo``) driven by the same load generator with the same
messages and concurrency, and raw sqlite3 inserts and reads of the same rows (ids from the
store's own generator) into the same table shape the store uses. Dividing a server's figure
by these says how far it is from what the hardware and the libraries allow, independently of
how fast (or busy) this box is today.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import echo
from bench.load import LoadResult, LoadSpec
from bench.procs import REPO, CpuMeter, free_port, us_per
from event_store.events import new_event_id

# As migrations 0001 + 0003 leave it on SQLite: the sequence is the rowid.
SCHEMA = """
CREATE TABLE events (
    sequence INTEGER NOT NULL PRIMARY KEY,
    id VARCHAR(36) NOT NULL UNIQUE,
    type SMALLINT NOT NULL,
    publish_time DATETIME NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX ix_events_type_sequence ON events (type, sequence);
"""


@dataclass(frozen=True)
class EchoFigures:
    single_calls_per_s: float
    batch_events_per_s: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    # The echo server's CPU per call at the paced rate (scenario 5's): the same-run reference
    # for the servers' CPU per event, which depends on the rate and on how busy the box is.
    paced_cpu_us_per_call: float = 0.0
    # Its main thread's CPU per call under target 1's closed-loop load: with grpc.aio that
    # thread tops out near two thirds of a core (the rest is waiting on gRPC's poller
    # thread), so a server's rate there is about inversely proportional to this figure.
    main_thread_us_per_call: float = 0.0


async def echo_limits(
    run_load: Callable[[LoadSpec], Awaitable[LoadResult]],
    single: bytes,
    batch: bytes,
    batch_size: int,
    *,
    callers: int,
    batch_callers: int,
    duration: float,
    warmup: float,
    rate: float,
) -> EchoFigures:
    """The echo server's rates with the publish tests' messages and concurrency."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.echo",
        str(port),
        str(batch_size),
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"echo server did not start: {line!r}")
        addr = f"127.0.0.1:{port}"
        meter = CpuMeter(proc.pid)
        one = await run_load(
            LoadSpec(addr, echo.SINGLE, single, 1, callers, duration=duration, warmup=warmup)
        )
        main_per_call = us_per(meter.main_thread_seconds(), one.acked_events)
        many = await run_load(
            LoadSpec(
                addr, echo.BATCH, batch, batch_size, batch_callers, duration=duration, warmup=warmup
            )
        )
        meter = CpuMeter(proc.pid)
        paced = await run_load(
            LoadSpec(addr, echo.SINGLE, single, 1, 512, duration=max(duration, 0.5), rate=rate)
        )
        cpu = meter.seconds()
    finally:
        proc.terminate()
        await proc.wait()
    return EchoFigures(
        one.calls_per_s,
        many.events_per_s,
        paced.rtt(0.5),
        paced.rtt(0.99),
        us_per(cpu, paced.acked_events),
        main_per_call,
    )


@dataclass(frozen=True)
class SqliteFigures:
    commits_per_s: float  # one row per transaction (a publish without group commit)
    insert_rows_per_s: float  # transactions of ``batch`` rows, the store's UUIDv7 ids
    read_rows_per_s: float  # reads of ``batch`` rows by sequence, as a delivery loop does
    # The same inserts with random uuid4 ids, as the store used before migration 0003: the
    # unique index on ``id`` then takes every insert at a random page.
    uuid4_insert_rows_per_s: float = 0.0


Row = tuple[int, str, int, str, bytes]


def _row(seq: int, body: bytes, stamp: str) -> Row:
    return (seq, new_event_id(), 13, stamp, body)


def _uuid4_row(seq: int, body: bytes, stamp: str) -> Row:
    return (seq, str(uuid.uuid4()), 13, stamp, body)


def _insert_rate(
    conn: sqlite3.Connection,
    make: Callable[[int, bytes, str], Row],
    body: bytes,
    stamp: str,
    first: int,
    rows: int,
    batch: int,
) -> float:
    insert = "INSERT INTO events VALUES (?, ?, ?, ?, ?)"
    seq = first
    started = time.perf_counter()
    while seq < first + rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, [make(seq + i + 1, body, stamp) for i in range(batch)])
        conn.execute("COMMIT")
        seq += batch
    return (seq - first) / (time.perf_counter() - started)


def _connect(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


def sqlite_limits(path: Path, body: bytes, rows: int, commits: int, batch: int) -> SqliteFigures:
    """Raw sqlite3 with the servers' pragmas (WAL, synchronous=NORMAL) and table."""
    conn = _connect(path)
    try:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        started = time.perf_counter()
        for seq in range(1, commits + 1):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)", _row(seq, body, stamp))
            conn.execute("COMMIT")
        commit_rate = commits / (time.perf_counter() - started)
        insert_rate = _insert_rate(conn, _row, body, stamp, commits, rows, batch)
        query = (
            "SELECT sequence, id, type, publish_time, body FROM events"
            " WHERE sequence > ? ORDER BY sequence LIMIT ?"
        )
        cursor, read = 0, 0
        started = time.perf_counter()
        while True:
            got = conn.execute(query, (cursor, batch)).fetchall()
            if not got:
                break
            read += len(got)
            cursor = got[-1][0]
        read_rate = read / (time.perf_counter() - started)
    finally:
        conn.close()
    conn = _connect(path)
    try:
        uuid4_rate = _insert_rate(conn, _uuid4_row, body, stamp, 0, rows, batch)
    finally:
        conn.close()
    return SqliteFigures(commit_rate, insert_rate, read_rate, uuid4_rate)


async def postgres_limits(url: str, body: bytes, rows: int, batch: int) -> SqliteFigures:
    """The same measurement on PostgreSQL with asyncpg and no ORM (for ``--db postgresql``)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )
    try:
        await conn.execute(
            SCHEMA.replace("events", "raw_events")
            .replace("ix_events", "ix_raw_events")
            .replace("INTEGER NOT NULL PRIMARY KEY", "BIGINT NOT NULL PRIMARY KEY")
            .replace("DATETIME", "TIMESTAMP")
            .replace("BLOB", "BYTEA")
        )
        stamp = datetime.now(UTC).replace(tzinfo=None)
        insert = "INSERT INTO raw_events VALUES ($1, $2, $3, $4, $5)"
        commits = max(batch, rows // 50)
        started = time.perf_counter()
        for seq in range(1, commits + 1):
            await conn.execute(insert, seq, new_event_id(), 13, stamp, body)
        commit_rate = commits / (time.perf_counter() - started)
        seq = commits
        started = time.perf_counter()
        while seq < commits + rows:
            async with conn.transaction():
                await conn.executemany(
                    insert,
                    [(seq + i + 1, new_event_id(), 13, stamp, body) for i in range(batch)],
                )
            seq += batch
        insert_rate = (seq - commits) / (time.perf_counter() - started)
        query = (
            "SELECT sequence, id, type, publish_time, body FROM raw_events"
            " WHERE sequence > $1 ORDER BY sequence LIMIT $2"
        )
        cursor, read = 0, 0
        started = time.perf_counter()
        while True:
            got = await conn.fetch(query, cursor, batch)
            if not got:
                break
            read += len(got)
            cursor = got[-1][0]
        read_rate = read / (time.perf_counter() - started)
        await conn.execute("DROP TABLE raw_events")
    finally:
        await conn.close()
    return SqliteFigures(commit_rate, insert_rate, read_rate)
