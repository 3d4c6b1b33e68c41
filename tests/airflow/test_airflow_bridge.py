"""A real Airflow (its own virtualenv, ``airflow dags test`` on SQLite) publishes through the
bridge to real servers, and a logger instance receives the DAG runs' events in order.

``airflow dags test`` creates its DAG run already running, so Airflow calls no
``on_dag_run_running`` there: those runs yield task starts/ends/fails and the run's end or
failure. WORKFLOW_START comes from the scheduler, which starts a queued run: one scheduler
loop (``airflow scheduler --num-runs 1``) shows it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from listener_client import ListenerClient
from tests.support.airflow_env import AirflowHome, airflow_venv
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import logger_package
from tests.support.servers import ServerPair, eventually, free_port

# The first test's setup may build the Airflow virtualenv (one to two minutes, more under
# load) and prepare its database before the DAG runs: more than the suite's 300 s default.
pytestmark = pytest.mark.timeout(1200)

BASE_URL = "http://airflow.test:8080/"
TYPES = ["WORKFLOW_START", "WORKFLOW_END", "WORKFLOW_FAIL", "TASK_START", "TASK_END", "TASK_FAIL"]


def name_of(event: dict[str, Any]) -> str:
    return str(event["task_name"] if event["type"].startswith("TASK") else event["workflow_name"])


def airflow_hostname(venv: Path) -> str:
    """The host name Airflow records for a task (its ``hostname_callable``) on this machine."""
    code = "from airflow.utils.net import get_hostname; print(get_hostname())"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def source_parts(event: dict[str, Any]) -> list[str]:
    """``airflow/<dag>/<run>[/<task>/<try>]``, unquoted."""
    return [unquote(p) for p in event["source"].split("/")]


@pytest.fixture(scope="module")
def venv() -> Path:
    return airflow_venv()


@pytest.fixture(scope="module")
def migrated_db(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow metadata database made once, each test copies it: migrated, with the test
    DAGs serialized (the scheduler reads them from there) and the slotless pool."""
    home = AirflowHome(venv, tmp_path_factory.mktemp("airflow-schema"), {})
    for command in (
        ("db", "migrate"),
        ("dags", "reserialize"),
        ("pools", "set", "bridge_closed", "0", "no slots: tasks stay scheduled"),
    ):
        done = home.run(*command)
        assert done.returncode == 0, done.stdout + done.stderr
    return home.home / "airflow.db"


def airflow_home(venv: Path, db: Path, tmp_path: Path, **settings: str) -> AirflowHome:
    home = AirflowHome(
        venv,
        tmp_path / "airflow",
        {
            "AIRFLOW__API__BASE_URL": BASE_URL,
            **{f"AIRFLOW__LISTENER_SERVICE__{k.upper()}": v for k, v in settings.items()},
        },
    )
    home.home.mkdir()
    shutil.copyfile(db, home.home / "airflow.db")
    return home


async def test_dag_runs_reach_a_logger_instance_in_order(
    venv: Path, migrated_db: Path, tmp_path: Path
) -> None:
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    out = tmp_path / "events.jsonl"
    try:
        pair.start_both()
        async with ListenerClient(pair.api_addr) as client:
            await client.install_plugin(logger_package())
            await client.create_instance(
                "airflow-audit", "logger", event_types=TYPES, params={"logFile": str(out)}
            )
            home = airflow_home(
                venv, migrated_db, tmp_path, targets=pair.api_addr, project_name="airflow-test"
            )

            ok = await asyncio.to_thread(home.run, "dags", "test", "bridge_ok")
            assert ok.returncode == 0, ok.stdout + ok.stderr
            failed = await asyncio.to_thread(home.run, "dags", "test", "bridge_fail")
            assert failed.returncode != 0, "the failing DAG run must fail"
            for done in (ok, failed):
                assert "not published" not in done.stdout + done.stderr

            # Each hook waited for the store's acknowledgement: everything is stored now.
            stored = await client.list_events()
            assert len(stored) == 10, [e.WhichOneof("payload") for e in stored]
            events = await eventually(lambda: (got := read_jsonl(out)) and len(got) >= 10 and got)
    finally:
        pair.stop()

    assert [(e["type"], name_of(e)) for e in events] == [
        ("TASK_START", "extract"),
        ("TASK_END", "extract"),
        ("TASK_START", "load"),
        ("TASK_END", "load"),
        ("WORKFLOW_END", "bridge_ok"),
        ("TASK_START", "extract"),
        ("TASK_END", "extract"),
        ("TASK_START", "explode"),
        ("TASK_FAIL", "explode"),
        ("WORKFLOW_FAIL", "bridge_fail"),
    ]
    assert [e["id"] for e in events] == [e.id for e in stored]
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == 10

    host = airflow_hostname(venv)
    run_ids = []
    for run in (events[:5], events[5:]):
        dag_id = run[-1]["workflow_name"]
        run_id = source_parts(run[-1])[2]
        assert source_parts(run[-1]) == ["airflow", dag_id, run_id]
        run_ids.append(run_id)
        for event in run:
            assert event["workflow_name"] == dag_id
            assert event["project_name"] == "airflow-test"
            assert event["event_time"]
            assert event["start_time"]
        for event in run[:4]:
            task = event["task_name"]
            assert source_parts(event) == ["airflow", dag_id, run_id, task, "1"]
            assert event["owner"] == "etl-team"
            assert "Python" in event["task_type"], event["task_type"]
            assert event["host"] == host
            assert event["log_path"] == (
                f"{BASE_URL}dags/{dag_id}/runs/{quote(run_id)}/tasks/{task}?try_number=1"
            )
            expected = {"TASK_START": "running", "TASK_END": "success", "TASK_FAIL": "failed"}
            assert event["task_state"] == expected[event["type"]]
            if event["type"] == "TASK_START":
                assert not event.get("end_time")
            else:
                assert ts(event["end_time"]) >= ts(event["start_time"])
        workflow = run[-1]
        assert workflow["state"] == ("success" if dag_id == "bridge_ok" else "failed")
        assert workflow["command_type"] == "manual"
        assert workflow["workflow_instance_id"] > 0
        assert workflow["run_times"] == 1
        assert workflow["owner"] == "etl-team"
        assert workflow["host"] == host
        assert ts(workflow["end_time"]) >= ts(workflow["start_time"])
        assert workflow["event_time"] == workflow["end_time"]
    assert run_ids[0] != run_ids[1]
    assert events[4]["workflow_instance_id"] != events[9]["workflow_instance_id"]


async def test_airflow_runs_on_when_the_service_is_down(
    venv: Path, migrated_db: Path, tmp_path: Path
) -> None:
    """No server listens: the first hook waits ``ack_timeout`` and says so, the later ones
    hand their events over without waiting, and the DAG run still succeeds."""
    home = airflow_home(
        venv, migrated_db, tmp_path, targets=f"127.0.0.1:{free_port()}", ack_timeout="1"
    )
    done = await asyncio.to_thread(home.run, "dags", "test", "bridge_ok")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("not acknowledged within 1s") == 1, output
    assert "not published" not in output, output


async def test_the_scheduler_publishes_workflow_start(
    venv: Path, migrated_db: Path, tmp_path: Path
) -> None:
    """One loop of the real scheduler creates the ``@once`` DAG's run and starts it; its task
    waits on a pool without slots, so nothing else happens."""
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    out = tmp_path / "events.jsonl"
    try:
        pair.start_both()
        async with ListenerClient(pair.api_addr) as client:
            await client.install_plugin(logger_package())
            await client.create_instance(
                "airflow-audit", "logger", event_types=TYPES, params={"logFile": str(out)}
            )
            home = airflow_home(venv, migrated_db, tmp_path, targets=pair.api_addr)
            done = await asyncio.to_thread(
                home.run, "scheduler", "--num-runs", "1", "--skip-serve-logs"
            )
            output = done.stdout + done.stderr
            assert done.returncode == 0, output
            assert "not published" not in output, output
            stored = await client.list_events()
            assert [e.WhichOneof("payload") for e in stored] == ["workflow_start"]
            (event,) = await eventually(lambda: read_jsonl(out))
    finally:
        pair.stop()

    assert event["type"] == "WORKFLOW_START"
    assert event["workflow_name"] == "bridge_scheduled"
    assert (event["state"], event["command_type"]) == ("running", "scheduled")
    assert event["run_times"] == 1 and event["workflow_instance_id"] > 0
    assert event["host"] == airflow_hostname(venv)
    assert event["owner"] == "etl-team"
    assert not event.get("end_time")
    assert event["event_time"] == event["start_time"]
    parts = source_parts(event)
    assert parts[:2] == ["airflow", "bridge_scheduled"] and parts[2].startswith("scheduled__")
