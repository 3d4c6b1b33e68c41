"""The docs say what the code does: every grpcurl and every curl example in docs/api.md runs
as written against real servers, every RPC has one of each, and the README's configuration
table lists exactly the configuration's keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from api_server.http import routes as routing
from listener.v1 import caller_pb2, event_service_pb2, listener_instance_pb2, plugin_pb2
from listener_common.package import build_package
from listener_core.config import KEYS
from tests.ops.helpers import REPO, grpcurl_dir
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.servers import ServerPair

API_DOC = REPO / "docs" / "api.md"
README = REPO / "README.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
_EXPECT = re.compile(r"^# expect: ([A-Z_]+)\n")


_CURL = re.compile(r"(?<![\w-])curl ")


def examples() -> list[str]:
    """The grpcurl examples, in order."""
    return [b for b in _BLOCK.findall(API_DOC.read_text()) if not _CURL.search(b)]


def http_examples() -> list[str]:
    """The curl examples (HTTP/JSON), in order."""
    return [b for b in _BLOCK.findall(API_DOC.read_text()) if _CURL.search(b)]


def _camel(code: str) -> str:
    """grpcurl prints FAILED_PRECONDITION as FailedPrecondition."""
    return "".join(part.capitalize() for part in code.split("_"))


def test_every_public_rpc_has_an_example() -> None:
    text = "\n".join(examples())
    missing = [
        f"{service.full_name}/{method.name}"
        for module, name in (
            (plugin_pb2, "PluginService"),
            (listener_instance_pb2, "ListenerInstanceService"),
            (event_service_pb2, "EventService"),
            (caller_pb2, "CallerService"),
        )
        for service in [module.DESCRIPTOR.services_by_name[name]]
        for method in service.methods
        if f"{service.full_name}/{method.name}" not in text
    ]
    assert not missing, f"docs/api.md has no example for {missing}"


def test_every_http_route_has_a_curl_example() -> None:
    """Each route of the annotations is called by some curl example with its HTTP method."""
    called: list[tuple[str, str]] = []
    for block in http_examples():
        method = re.search(r"-X (\w+)", block)
        verb = method.group(1) if method else ("POST" if " -d " in block else "GET")
        called += [(verb, path) for path in re.findall(r"\$HTTP(/v1/[^\s\"'?]*)", block)]
    missing = [
        f"{route.http_method} {route.template.text}"
        for route in routing.routes()
        if not any(
            verb == route.http_method and route.template.match(path) is not None
            for verb, path in called
        )
    ]
    assert not missing, f"docs/api.md has no curl example for {missing}"


def test_api_examples_run_as_written(tmp_path: Path) -> None:
    _run_examples(tmp_path, examples(), http=False)


def test_http_examples_run_as_written(tmp_path: Path) -> None:
    """The curl twins, on servers of their own: the same story through HTTP/JSON."""
    _run_examples(tmp_path, http_examples(), http=True)


def _run_examples(tmp_path: Path, blocks: list[str], *, http: bool) -> None:
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    package = build_package(REPO / "plugins" / "logger", tmp_path / "dist")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{grpcurl_dir()}:{os.environ['PATH']}",
        "API": pair.api_addr,
        "HTTP": f"http://{pair.http_addr}",
        "PKG": str(package),
        "OUT": str(out),
    }
    assert len(blocks) >= 30
    try:
        pair.start_both()
        for block in blocks:
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            expect = _EXPECT.match(block)
            shown = f"{block}\n--- stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}"
            if expect:
                assert proc.returncode != 0, f"expected {expect.group(1)}:\n{shown}"
                # grpcurl prints the status on stderr; curl --fail-with-body the body on stdout
                printed = proc.stdout if http else proc.stderr
                assert f'"code": {_grpc_number(expect.group(1))}' in printed, shown
            else:
                assert proc.returncode == 0, f"example failed:\n{shown}"
        # What the examples did, seen from outside: the instance delivered the published
        # task failure (and the replays redelivered it), disk-full parked its head event,
        # and the spare plugin is gone.
        audit = out / "audit.jsonl"
        deadline = time.monotonic() + 60
        tasks: list[str] = []
        while time.monotonic() < deadline:
            tasks = [line.get("task_name", "") for line in read_jsonl(audit)]
            if tasks.count("extract") >= 3:
                break
            time.sleep(0.1)
        assert tasks.count("extract") >= 3, tasks  # delivered, then two replays
        assert "load" in tasks
    finally:
        logs = {name: pair.log(name) for name in ("api_server", "alert_server")}
        codes = pair.stop()
    assert codes == {"alert_server": 0, "api_server": 0}, logs
    assert "CreatePlugin plugins/logger-copy: OK" in logs["api_server"]
    assert "SkipListenerInstanceEvent listenerInstances/disk-full: OK" in logs["api_server"]


def readme_block(heading: str) -> str:
    """The first shell block of a README section."""
    section = README.read_text().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    return str(_BLOCK.findall(section)[0])


def test_readme_blocks_run_pasted_in_order(tmp_path: Path) -> None:
    """The walk-through, HTTP/JSON and listenerctl blocks, pasted in order into one shell as
    a new user does after `make run`: only the addresses and /tmp differ. The listenerctl
    block once clashed with the walk-through's plugin and instance (ALREADY_EXISTS), used a
    bare listenerctl that is not on PATH, and step 4 raced the delivery."""
    blocks = [
        readme_block(h) for h in ("## Walk-through with grpcurl", "## HTTP/JSON", "## listenerctl")
    ]
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    script = "\n".join(blocks)
    for old, new in (
        ("127.0.0.1:50051", pair.api_addr),
        ("127.0.0.1:8080", pair.http_addr),
        ("/tmp/listener-", f"{tmp_path}/listener-"),
    ):
        assert old in script, old
        script = script.replace(old, new)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTENER_")}
    try:
        pair.start_both()
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env={**env, "PATH": "/usr/bin:/bin"},  # no .venv on PATH, as after `make run`
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # The event, its replay (the same id again) and the test event, in ops's file.
        ops = tmp_path / "listener-ops.jsonl"
        deadline = time.monotonic() + 60
        lines: list[dict[str, str]] = []
        while len(lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            lines = read_jsonl(ops)
    finally:
        pair.stop()
    audit = [json.loads(x) for x in (tmp_path / "listener-audit.jsonl").read_text().splitlines()]
    assert audit[0]["task_name"] == "extract"  # step 4 printed it: no race
    assert "extract" in proc.stdout
    assert "installed plugins/ops-logger" in proc.stdout
    assert "DELIVERED  seq" in proc.stdout and "WORKFLOW_FAIL" in proc.stdout  # the tail line
    assert "delivered a test WORKFLOW_FAIL" in proc.stdout
    ids = [x["id"] for x in lines]
    assert len(lines) == 3 and ids.count(ids[0]) == 2, lines
    assert lines[0]["workflow_name"] == "nightly"
    assert sum(i.startswith("test-") for i in ids) == 1


def _grpc_number(code: str) -> int:
    import grpc

    return int(grpc.StatusCode[code].value[0])


def _table_keys(text: str, heading: str) -> list[str]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    keys: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            keys.extend(re.findall(r"`([a-z0-9_]+)`", first))
    return keys


def test_readme_configuration_table_matches_config() -> None:
    keys = _table_keys(README.read_text(), "## Configuration")
    fields = set(KEYS)
    assert len(keys) == len(set(keys)), "a key is listed twice"
    assert set(keys) - fields == set(), "README lists keys the config does not have"
    assert fields - set(keys) == set(), "config keys missing from the README table"


OPERATORS = REPO / "docs" / "operators.md"
#: docs/operators.md's blocks, indented under list items too.
_ANY_BLOCK = re.compile(r"^( *)```sh\n(.*?)^\1```", re.S | re.M)


def operator_blocks() -> list[str]:
    return [
        "\n".join(line.removeprefix(indent) for line in body.splitlines())
        for indent, body in _ANY_BLOCK.findall(OPERATORS.read_text())
    ]


def test_operator_blocks_are_shell_and_their_grpcurl_calls_run(tmp_path: Path) -> None:
    """Every shell block of docs/operators.md parses; the ones that call the servers with
    grpcurl (health, a traced publish) run as written against real servers. The compose
    and Kubernetes blocks need an engine and a cluster: tests/ops/test_compose.py and
    test_kubernetes.py check what they rely on."""
    blocks = operator_blocks()
    assert len(blocks) == OPERATORS.read_text().count("```sh")  # none missed
    for block in blocks:
        parsed = subprocess.run(["bash", "-n", "-c", block], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{block}\n{parsed.stderr}"
    calls = [b for b in blocks if b.lstrip().startswith("grpcurl")]
    assert len(calls) >= 2, "the health and the traced publish blocks"
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTENER_") and k != "TOKEN"}
    env["PATH"] = f"{grpcurl_dir()}:{env['PATH']}"
    try:
        pair.start_both()
        for block in calls:
            script = block.replace("127.0.0.1:50051", pair.api_addr).replace(
                "timeout 30", "timeout 2"
            )
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
            assert '"status": "SERVING"' in proc.stdout or '"sequence": "1"' in proc.stdout
    finally:
        pair.stop()
