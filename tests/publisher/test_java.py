"""The Java publisher (clients/java/), built by ``make java`` from Debian's packages and run as
its launcher, against real API servers: ``listener-publish`` through two SIGKILLs of the API
server, TLS, mTLS and a token, and a dead server among several."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from listener.v1.event_pb2 import EventType
from listener_client import ListenerClient
from tests.publisher.support import add_logger, logged
from tests.security.helpers import make_certs
from tests.support.databases import sqlite_url
from tests.support.servers import REPO, ServerPair, eventually, free_port, running_pair

LAUNCHER = REPO / "clients" / "java" / "build" / "listener-publish"


@pytest.fixture(scope="module")
def launcher() -> Path:
    """Builds the jar and the launcher (a no-op when they are fresh)."""
    build = subprocess.run(
        ["make", "java"], cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    assert build.returncode == 0, f"make java failed:\n{build.stdout}\n{build.stderr}"
    assert LAUNCHER.exists() and (LAUNCHER.parent / "listener-client.jar").exists()
    return LAUNCHER


def event_lines(count: int, start: int = 0) -> str:
    """One TASK_FAIL event per line, in the JSON form PublishEvent takes (both spellings)."""
    lines = []
    for i in range(start, start + count):
        payload = {"projectName": "etl", "task_name": f"t{i}", "taskInstanceId": i}
        lines.append(json.dumps({"source": "master-1:5678", "task_fail": payload}))
    return "\n".join(lines) + "\n"


def output_lines(path: Path) -> list[tuple[str, int]]:
    text = path.read_text() if path.exists() else ""
    return [(i, int(s)) for i, s in (line.split(" ") for line in text.split("\n")[:-1])]


async def test_java_publisher_through_two_api_server_kills(tmp_path: Path, launcher: Path) -> None:
    count = 100_000
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    out = tmp_path / "audit.jsonl"
    source = tmp_path / "events.jsonl"
    source.write_text(event_lines(count))
    printed = tmp_path / "printed.txt"
    try:
        pair.start_both()
        await add_logger(pair.api_addr, out)
        with source.open() as stdin, printed.open("w") as stdout:
            proc = await asyncio.create_subprocess_exec(
                str(launcher),
                "--server",
                pair.api_addr,
                stdin=stdin,
                stdout=stdout,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                for at in (count // 4, count * 5 // 8):
                    await eventually(lambda at=at: len(output_lines(printed)) >= at, timeout=300)
                    assert proc.returncode is None, "the publisher must still be running"
                    await asyncio.to_thread(pair.kill, "api_server")
                    await asyncio.to_thread(pair.start, "api_server")
                async with asyncio.timeout(600):
                    _, stderr = await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode == 0, stderr.decode()
        results = output_lines(printed)
        assert len(results) == count
        assert len({i for i, _ in results}) == count
        sequences = [s for _, s in results]
        assert sequences == sorted(sequences)

        async with ListenerClient(pair.api_addr, timeout=60) as client:
            stored = await client.list_events()
        assert [e.task_fail.task_instance_id for e in stored] == list(range(count))
        assert [(e.id, e.sequence) for e in stored] == results

        await eventually(lambda: len(logged(out)) >= count, timeout=300, interval=0.5)
        assert [line["task_instance_id"] for line in logged(out)] == list(range(count))
    finally:
        pair.stop()


def publish(launcher: Path, *args: str, lines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(launcher), *args], input=lines, capture_output=True, text=True, timeout=120
    )


async def test_java_publisher_tls_mtls_token_and_a_dead_server(
    tmp_path: Path, launcher: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    settings = {
        "tls_cert": str(certs.server_cert),
        "tls_key": str(certs.server_key),
        "tls_client_ca": str(certs.ca),
        "alert_tls_ca": str(certs.ca),
        "alert_tls_cert": str(certs.client_cert),
        "alert_tls_key": str(certs.client_key),
        "tokens": ("publisher:s3cret", "admin:adm1n"),
    }
    dead = f"127.0.0.1:{free_port()}"
    async with running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair:
        tls = ["--tls-ca", str(certs.ca)]
        mtls = [*tls, "--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]
        servers = ["--server", f"{dead},{pair.api_addr}"]
        ok = await asyncio.to_thread(
            publish,
            launcher,
            *servers,
            "--token",
            "s3cret",
            *mtls,
            "--batch-size",
            "7",
            lines=event_lines(50),
        )
        assert ok.returncode == 0, ok.stderr
        assert [s for _, s in output_lines_of(ok.stdout)] == list(range(1, 51))

        wrong = await asyncio.to_thread(
            publish,
            launcher,
            "--server",
            pair.api_addr,
            "--token",
            "nope",
            *mtls,
            lines=event_lines(2),
        )
        assert wrong.returncode == 1 and wrong.stdout == ""
        assert "UNAUTHENTICATED" in wrong.stderr

        bad = await asyncio.to_thread(
            publish,
            launcher,
            "--server",
            pair.api_addr,
            "--token",
            "s3cret",
            *mtls,
            lines=event_lines(2) + '{"task_fail": {"no_such_field": 1}}\n' + event_lines(1),
        )
        assert bad.returncode == 4 and "line 3" in bad.stderr
        assert len(output_lines_of(bad.stdout)) == 2  # those before the bad line, none after

        usage = await asyncio.to_thread(publish, launcher, lines="")
        assert usage.returncode == 2 and "--server is required" in usage.stderr
        async with ListenerClient(
            pair.api_addr,
            token="adm1n",
            tls_ca=certs.ca,
            tls_cert=certs.client_cert,
            tls_key=certs.client_key,
        ) as client:
            assert len(await client.list_events()) == 52


async def test_java_publisher_takes_short_and_full_type_names(
    tmp_path: Path, launcher: Path
) -> None:
    """``type`` as PublishEvent's JSON takes it: ``TASK_FAIL`` or ``EVENT_TYPE_TASK_FAIL``."""
    lines = [
        {"type": "TASK_FAIL", "task_fail": {"task_name": "short"}},
        {"type": "EVENT_TYPE_TASK_FAIL", "taskFail": {"taskName": "full"}},
        {"type": "WORKFLOW_END", "workflowEnd": {"workflowName": "w"}},
    ]
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        done = await asyncio.to_thread(
            publish,
            launcher,
            "--server",
            pair.api_addr,
            lines="".join(json.dumps(line) + "\n" for line in lines),
        )
        assert done.returncode == 0, done.stderr
        assert [s for _, s in output_lines_of(done.stdout)] == [1, 2, 3]
        async with ListenerClient(pair.api_addr, timeout=60) as client:
            stored = await client.list_events()
        assert [(e.type, e.WhichOneof("payload")) for e in stored] == [
            (EventType.EVENT_TYPE_TASK_FAIL, "task_fail"),
            (EventType.EVENT_TYPE_TASK_FAIL, "task_fail"),
            (EventType.EVENT_TYPE_WORKFLOW_END, "workflow_end"),
        ]


def output_lines_of(text: str) -> list[tuple[str, int]]:
    return [(i, int(s)) for i, s in (line.split(" ") for line in text.splitlines())]


def test_launcher_usage(launcher: Path) -> None:
    shown = subprocess.run([str(launcher), "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--server HOST:PORT" in shown.stdout
    wrong = subprocess.run(
        [str(launcher), "--server", "127.0.0.1:1", "--batch-size", "many"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 2 and "--batch-size needs a number" in wrong.stderr


@pytest.fixture(scope="module")
def classpath(launcher: Path) -> str:
    """The launcher's class path: the jar and Debian's jars."""
    text = launcher.read_text().split('-cp "')[1].split('"')[0]
    return text.replace("$DIR", str(launcher.parent))


async def test_java_publisher_batching_linger_and_buffer_policies(
    tmp_path: Path, classpath: str
) -> None:
    """clients/java/test/…/PublisherChecks: count and linger batching against a real server,
    FAIL and BLOCK when full, flush and close with timeouts against a dead address."""
    source = REPO / "clients/java/test/io/listener/client/PublisherChecks.java"
    built = tmp_path / "classes"
    javac = await asyncio.create_subprocess_exec(
        "javac", "-nowarn", "-cp", classpath, "-d", str(built), str(source)
    )
    async with asyncio.timeout(300):
        assert await javac.wait() == 0
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        checks = await asyncio.create_subprocess_exec(
            "java",
            "-cp",
            f"{built}:{classpath}",
            "io.listener.client.PublisherChecks",
            pair.api_addr,
            f"127.0.0.1:{free_port()}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(300):
            out, err = await checks.communicate()
    assert checks.returncode == 0, out.decode() + err.decode()
    assert out.decode().count("ok ") == 5, out.decode()
