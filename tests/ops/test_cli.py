"""listenerctl as an operator runs it: ``python -m listener_cli`` processes against both servers
as processes (with tokens on), checking what it prints and the exit codes scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener_cli.parser import EPILOG, build_parser
from tests.ops.helpers import REPO, cli
from tests.support.databases import sqlite_url
from tests.support.samples import FLAKY_PLUGIN, manifest
from tests.support.servers import ServerPair, free_port

ADMIN = "adm1n-token-for-tests"
VIEWER = "v1ewer-token-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cli")
    pair = ServerPair(
        sqlite_url(root),
        root / "data",
        extra_env={"LISTENER_TOKENS": f"admin:{ADMIN},viewer:{VIEWER}"},
    )
    pair.start_both()
    try:
        yield pair.api_addr
    finally:
        pair.stop()


def run(server: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return cli(*args, server=server, token=ADMIN, stdin=stdin)


def ok(server: str, *args: str, stdin: str | None = None) -> str:
    proc = run(server, *args, stdin=stdin)
    assert proc.returncode == 0, f"{args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def as_json(server: str, *args: str, stdin: str | None = None) -> object:
    return json.loads(ok(server, "--json", *args, stdin=stdin))


def tail_process(server: str, *args: str) -> subprocess.Popen[str]:
    """``listenerctl --json tail ARGS`` running in the background."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "listener_cli",
            "--server",
            server,
            "--token",
            ADMIN,
            "--json",
            "tail",
            *args,
            "--interval",
            "0.1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def flaky_folder(root: Path) -> Path:
    """A plugin source folder: fails every event of a task named in failTasks."""
    folder = root / "flaky-src"
    folder.mkdir(exist_ok=True)
    (folder / "flaky_listener.py").write_text(FLAKY_PLUGIN)
    (folder / "listener-plugin.toml").write_text(manifest("flaky", "flaky_listener:FlakyListener"))
    return folder


def test_help_of_every_command_shows_the_exit_codes() -> None:
    parser = build_parser()
    paths: list[list[str]] = [[]]
    groups = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in groups.items():
        paths.append([name])
        if sub._subparsers is not None:
            paths.extend([name, action] for action in sub._subparsers._group_actions[0].choices)
    assert ["instance", "replay"] in paths and ["tail"] in paths and ["plugin", "build"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*path, "--help"])
        assert exited.value.code == 0, path
    # One real process, to see the text an operator gets.
    proc = cli("instance", "replay", "--help")
    assert proc.returncode == 0
    assert "--from-sequence" in proc.stdout and "--from-time" in proc.stdout
    assert "7  authentication" in proc.stdout and EPILOG.splitlines()[0] in proc.stdout


def test_usage_errors_exit_2() -> None:
    assert cli().returncode == 2
    assert cli("plugin", "frobnicate").returncode == 2
    proc = cli("instance", "replay", "x")  # needs --from-sequence or --from-time
    assert proc.returncode == 2 and "one of the arguments" in proc.stderr
    # A typo gets the nearest name, at either level.
    proc = cli("instanse", "list")
    assert proc.returncode == 2 and "did you mean 'instance'?" in proc.stderr, proc.stderr
    proc = cli("plugin", "unistall", "x")
    assert proc.returncode == 2 and "did you mean 'uninstall'?" in proc.stderr, proc.stderr
    # --events is required to create an instance, and its help says so.
    usage = cli("instance", "create", "--help").stdout
    assert "--events EVENTS" in usage and "[--events EVENTS]" not in usage
    assert "required: comma separated event types" in usage
    proc = cli("instance", "create", "x", "--plugin", "p")
    assert proc.returncode == 2 and "--events" in proc.stderr


def test_bad_json_says_what_was_expected() -> None:
    proc = cli("event", "publish", "-", stdin='{"task_fail": ')
    assert proc.returncode == 4
    assert "not valid JSON" in proc.stderr and '{"events": [...]}' in proc.stderr, proc.stderr


def test_a_reader_that_goes_away_ends_it_quietly(server: str) -> None:
    """``listenerctl plugin list | head -1``: the reader has what it wants; no traceback and
    no "invalid argument" exit, but SIGPIPE's 141, as Unix tools."""
    command = ["--server", server, "--token", ADMIN, "plugin", "list"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "listener_cli", *command],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # gone before a byte was read
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == "", err


def test_plugin_lifecycle(server: str, tmp_path: Path) -> None:
    folder = flaky_folder(tmp_path)
    built = as_json(server, "plugin", "build", str(folder), "--out", str(tmp_path / "dist"))
    assert isinstance(built, dict) and built["name"] == "flaky"
    assert Path(built["path"]).is_file() and built["size"] > 0

    # A folder is built and streamed in small chunks: the progress bar goes to stderr.
    proc = run(
        server,
        "plugin",
        "install",
        str(folder),
        "--id",
        "flaky-a",
        "--stream",
        "--chunk-size",
        "300",
    )
    assert proc.returncode == 0, proc.stderr
    assert "installed plugins/flaky-a 1.0.0" in proc.stdout
    assert "failCount" in proc.stdout  # the parameter form
    frames = proc.stderr.split("\r")
    assert len(frames) > 3 and "100%" in frames[-1] and frames[-1].endswith("\n")

    # A zip goes inline; the same sha256 either way.
    plugin = as_json(
        server, "plugin", "install", built["path"], "--id", "flaky-b", "--display-name", "Flaky B"
    )
    assert isinstance(plugin, dict) and plugin["sha256"] == built["sha256"]

    listed = ok(server, "plugin", "list")
    header, *rows = listed.splitlines()
    assert header.split()[:3] == ["ID", "VERSION", "STATE"]
    assert {r.split()[0] for r in rows} >= {"flaky-a", "flaky-b"}

    renamed = as_json(server, "plugin", "update", "flaky-b", "--display-name", "Renamed")
    assert isinstance(renamed, dict) and renamed["display_name"] == "Renamed"
    got = as_json(server, "plugin", "get", "plugins/flaky-b")
    assert isinstance(got, dict) and got["etag"] == renamed["etag"]

    # The size of the package, and a whole-number default as one.
    shown = ok(server, "plugin", "get", "flaky-b")
    assert any(line.split() == ["size", str(built["size"]), "B"] for line in shown.splitlines())
    assert "failCount" in shown and " 0 " in shown.split("failCount", 1)[1].splitlines()[0]
    assert "0.0" not in shown.split("params:", 1)[1]

    assert "uninstalled plugins/flaky-b" in ok(server, "plugin", "uninstall", "flaky-b")
    assert run(server, "plugin", "get", "flaky-b").returncode == 3
    ok(server, "plugin", "install", built["path"], "--id", "flaky-c")
    assert "uninstalled plugins/flaky-c" in ok(server, "plugin", "delete", "flaky-c")  # alias


def test_instances_events_status_and_tail(server: str, tmp_path: Path) -> None:
    ok(server, "plugin", "install", str(flaky_folder(tmp_path)), "--id", "flaky-i")
    out = tmp_path / "delivered.jsonl"
    created = ok(
        server,
        "instance",
        "create",
        "watch",
        "--plugin",
        "flaky-i",
        "--param",
        f"logFile={out}",
        "--events",
        "TASK_FAIL,WORKFLOW_END",
    )
    assert "created listenerInstances/watch" in created
    assert "WORKFLOW_END,TASK_FAIL" in created

    # Both tails stop by themselves after --count lines: the instance's deliveries, and the
    # event log. They start from the log's end as it is now, however long they take to start
    # (a fixed sleep raced the publishes on a loaded machine).
    start = as_json(server, "instance", "status", "watch")
    assert isinstance(start, dict)
    now = str(start["delivery"]["delivered_sequence"])
    tail = tail_process(server, "watch", "--count", "3", "--from-sequence", now)
    log_tail = tail_process(server, "--count", "4", "--from-sequence", now)

    one = {"task_fail": {"project_name": "etl", "task_name": "extract"}}
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(one))
    published = as_json(server, "event", "publish", str(event_file))
    assert isinstance(published, dict) and published["sequence"] >= 1
    batch = [
        {"workflow_end": {"workflow_name": "nightly"}},
        {"task_start": {"task_name": "not-subscribed"}},
        {"task_fail": {"task_name": "load"}},
    ]
    table = ok(server, "event", "publish", "-", stdin=json.dumps({"events": batch}))
    rows = table.splitlines()[1:]
    assert [r.split()[1] for r in rows] == ["WORKFLOW_END", "TASK_START", "TASK_FAIL"]

    stdout, stderr = tail.communicate(timeout=30)
    assert tail.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [(x["status"], x["type"]) for x in lines] == [
        ("delivered", "TASK_FAIL"),
        ("delivered", "WORKFLOW_END"),
        ("delivered", "TASK_FAIL"),
    ]
    assert lines[0]["id"] == published["id"]
    stdout, stderr = log_tail.communicate(timeout=30)
    assert log_tail.returncode == 0, stderr
    logged = [json.loads(line) for line in stdout.splitlines()]
    assert [x["type"] for x in logged] == ["TASK_FAIL", "WORKFLOW_END", "TASK_START", "TASK_FAIL"]
    assert {x["status"] for x in logged} == {"published"}

    status = as_json(server, "instance", "status", "watch")
    assert isinstance(status, dict)
    assert status["state"] == "STATE_ACTIVE"
    assert status["delivery"]["pending_count"] == 0
    assert status["delivery"]["delivered_sequence"] == int(rows[2].split()[0])
    human = ok(server, "instance", "status", "watch")
    for label in ("pending", "lag", "last error", "next attempt", "recent attempts"):
        assert label in human

    listed = ok(server, "event", "list", "--events", "TASK_FAIL", "--after", "0")
    assert "task=extract" in listed and "task=load" in listed and "not-subscribed" not in listed

    # Params merge: a changed one, the others kept.
    updated = as_json(
        server, "instance", "update", "watch", "--param", "failCount=0", "--events", "TASK_FAIL"
    )
    assert isinstance(updated, dict)
    assert updated["params"]["logFile"] == str(out) and updated["params"]["failCount"] == "0"
    assert updated["event_types"] == ["EVENT_TYPE_TASK_FAIL"]
    instances = ok(server, "instance", "list")
    assert any(line.split()[0] == "watch" for line in instances.splitlines()[1:])

    assert "deleted listenerInstances/watch" in ok(server, "instance", "delete", "watch")


def test_tail_from_the_start_shows_only_what_reached_the_instance(
    server: str, tmp_path: Path
) -> None:
    """An instance starts at the log's end: an event stored before it existed is behind its
    cursor but never reached it, and ``tail --from-sequence 0`` must not call it delivered
    (it did, so the plugin guide's tail showed another instance's event)."""
    ok(server, "plugin", "install", str(flaky_folder(tmp_path)), "--id", "flaky-late")
    task = {"task_fail": {"task_name": "before"}}
    before = as_json(server, "event", "publish", "-", stdin=json.dumps(task))
    ok(server, "instance", "create", "late", "--plugin", "flaky-late", "--param",
       f"logFile={tmp_path / 'late.jsonl'}", "--events", "TASK_FAIL")  # fmt: skip
    task = {"task_fail": {"task_name": "after"}}
    after = as_json(server, "event", "publish", "-", stdin=json.dumps(task))
    assert isinstance(before, dict) and isinstance(after, dict)
    tail = tail_process(server, "late", "--count", "1", "--from-sequence", "0")
    stdout, stderr = tail.communicate(timeout=60)
    assert tail.returncode == 0, stderr
    [line] = [json.loads(x) for x in stdout.splitlines()]
    assert (line["status"], line["id"]) == ("delivered", after["id"]), (line, before["id"])


def test_operator_actions(server: str, tmp_path: Path) -> None:
    ok(server, "plugin", "install", str(flaky_folder(tmp_path)), "--id", "flaky-o")
    out = tmp_path / "ops.jsonl"
    ok(
        server,
        "instance",
        "create",
        "ops",
        "--plugin",
        "flaky-o",
        "--param",
        f"logFile={out}",
        "--param",
        "failTasks=bad",
        "--events",
        "TASK_FAIL",
        "--park-after",
        "2",
    )
    ok(server, "event", "publish", "-", stdin='{"task_fail": {"task_name": "bad"}}')
    ok(server, "event", "publish", "-", stdin='{"task_fail": {"task_name": "good"}}')

    deadline = time.monotonic() + 60
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        got = as_json(server, "instance", "status", "ops")
        assert isinstance(got, dict)
        status = got["delivery"]
        if status["parked_count"] == 1 and status["pending_count"] == 0:
            break
        time.sleep(0.2)
    assert status["parked_count"] == 1 and status["pending_count"] == 0, status

    parked = ok(server, "parked", "list", "ops")
    assert "always fails" in parked and len(parked.splitlines()) == 2
    parked_json = as_json(server, "parked", "list", "ops")
    assert isinstance(parked_json, list) and parked_json[0]["attempts"] == 2
    bad_sequence = int(parked_json[0]["event"]["sequence"])
    assert as_json(server, "parked", "redeliver", "ops") == {"count": 1}

    paused = ok(server, "instance", "pause", "ops")
    assert "paused listenerInstances/ops" in paused and "PAUSED" in paused
    assert "ACTIVE" in ok(server, "instance", "resume", "ops")
    assert "retrying listenerInstances/ops" in ok(server, "instance", "retry", "ops")

    # Back to blocking, then replay everything: the head event (bad) now blocks the
    # instance, and skip parks it by hand.
    blocking = as_json(server, "instance", "update", "ops", "--block")
    assert isinstance(blocking, dict) and blocking["failure_policy"]["mode"] == "MODE_BLOCK"
    replayed = as_json(server, "instance", "replay", "ops", "--from-time", "2000-01-01T00:00:00Z")
    # The runner may already have redelivered the earlier TASK_FAIL events of this server by
    # the time the reply is read, but never past the bad event, which blocks again.
    assert isinstance(replayed, dict)
    assert replayed["delivery"]["delivered_sequence"] < bad_sequence

    test = run(server, "instance", "test", "ops", "--event", "task_fail")
    assert test.returncode == 0 and "delivered a test TASK_FAIL" in test.stdout

    skipped = run(server, "instance", "skip", "ops")
    assert skipped.returncode == 0 and "skipped the head event of listenerInstances/ops" in (
        skipped.stdout
    )
    replay_seq = run(server, "instance", "replay", "ops", "--from-sequence", "0")
    assert replay_seq.returncode == 4 and "from_sequence" in replay_seq.stderr


def test_exit_codes(server: str, tmp_path: Path) -> None:
    # 3 not found
    proc = run(server, "instance", "status", "missing")
    assert proc.returncode == 3 and "NOT_FOUND" in proc.stderr
    # 4 invalid argument: found locally, and by the server (with the field at fault)
    assert (
        run(
            server, "instance", "create", "x", "--plugin", "p", "--events", "TASK_EXPLODED"
        ).returncode
        == 4
    )
    assert run(server, "event", "publish", "-", stdin="{not json").returncode == 4
    assert run(server, "plugin", "install", str(tmp_path / "none.zip")).returncode == 4
    ok(server, "plugin", "install", str(flaky_folder(tmp_path)), "--id", "flaky-x")
    proc = run(
        server, "--json", "instance", "create", "x", "--plugin", "flaky-x", "--events", "TASK_FAIL"
    )
    assert proc.returncode == 4
    error = json.loads(proc.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["reason"] == "INVALID_PARAMS"
    assert {"field": "params.logFile", "description": "is required"} in error["field_violations"]
    # 5 failed precondition / conflict
    ok(
        server,
        "instance",
        "create",
        "user",
        "--plugin",
        "flaky-x",
        "--param",
        f"logFile={tmp_path / 'u.jsonl'}",
        "--events",
        "TASK_FAIL",
    )
    proc = run(server, "plugin", "uninstall", "flaky-x")
    assert proc.returncode == 5 and "PLUGIN_IN_USE" in proc.stderr
    assert (
        run(server, "plugin", "install", str(flaky_folder(tmp_path)), "--id", "flaky-x").returncode
        == 5
    )
    assert run(server, "plugin", "uninstall", "flaky-x", "--etag", "999").returncode == 5
    # 6 unavailable
    proc = cli("--timeout", "3", "plugin", "list", server=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 6 and "UNAVAILABLE" in proc.stderr
    # 7 authentication: no token, a wrong one, a role that may not
    assert cli("plugin", "list", server=server).returncode == 7
    assert cli("plugin", "list", server=server, token="nope").returncode == 7
    proc = cli("plugin", "uninstall", "flaky-x", server=server, token=VIEWER)
    assert proc.returncode == 7 and "PERMISSION_DENIED" in proc.stderr
    assert cli("plugin", "list", server=server, token=VIEWER).returncode == 0
    # health needs no token
    proc = cli("health", server=server)
    assert proc.returncode == 0 and "SERVING" in proc.stdout
