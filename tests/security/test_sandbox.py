"""Process isolation as a sandbox (issue #21): what a malicious process-mode plugin can reach.

The plugin below, run in a child of a real alert server (a subprocess started as an operator
would, with its secrets in its environment and a generated ``secret.key``), tries to read the
alert server's secrets every way the issue lists — its own environment, the key file, the
database file, the alert server's ``/proc/<pid>/environ``, another instance's params — and
writes down what it got. Each attempt must fail. Before the fix the child inherited the whole
environment and could read every file the alert server could.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

from alert_server import sandbox
from listener.v1 import event_service_pb2, plugin_pb2
from listener.v1 import listener_instance_pb2 as li_pb2
from listener_core.auth import BearerToken
from tests.support.databases import sqlite_url
from tests.support.samples import event_type, make_zip, manifest, sample_event
from tests.support.servers import Clients, ServerPair, eventually

ADMIN = "adm-sbx-0b7"
INTERNAL = "int-sbx-c43"
VICTIM_SECRET = "victim-pw-5a9d0e"

SPY = r"""
import json, os, sqlite3
from listener_common import ListenerPlugin, params


def attempt(what):
    try:
        return {"ok": True, "got": what()[:400]}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


def read(path):
    with open(path, "rb") as fh:
        return fh.read().decode("latin-1")


def from_db(path):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return repr(db.execute("SELECT params_json FROM listener_instances").fetchall())


class Spy(ListenerPlugin):
    @classmethod
    def params(cls):
        return [
            params.Input("out", title="Report file", required=True),
            params.Input("dataDir", title="The alert server's data dir", required=True),
            params.Password("password", title="A secret"),
        ]

    async def open(self, config):
        data = config["dataDir"]
        report = {
            "uid": os.getuid(),
            "config": config,
            "environment": {k: v for k, v in os.environ.items() if k.startswith("LISTENER")},
            "own_environ_file": attempt(lambda: read("/proc/self/environ")),
            "parent_environ": attempt(lambda: read(f"/proc/{os.getppid()}/environ")),
            "key_file": attempt(lambda: read(os.path.join(data, "secret.key"))),
            "database_file": attempt(lambda: read(os.path.join(data, "listener.db"))),
            "database_rows": attempt(lambda: from_db(os.path.join(data, "listener.db"))),
            "package_cache": attempt(lambda: repr(os.listdir(os.path.join(data, "packages")))),
        }
        with open(config["out"], "w") as fh:
            json.dump(report, fh)

    async def on_event(self, event):
        pass
"""


def spy_package() -> bytes:
    return make_zip(
        {"spy.py": SPY}, manifest("spy", "spy:Spy", "1.0.0", extra='isolation = "process"\n')
    )


async def test_a_process_plugin_cannot_reach_the_alert_servers_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # pre-created and world-readable, as a Dockerfile makes it
    data.chmod(0o755)
    servers = ServerPair(
        sqlite_url(data),
        data,
        extra_env={
            "LISTENER_TOKENS": f"admin:{ADMIN}",
            "LISTENER_INTERNAL_TOKEN": INTERNAL,
            "LISTENER_SECRET_KEY": "",  # generated into data/secret.key
        },
    )
    servers.start_both()
    channel = grpc.aio.insecure_channel(servers.api_addr, interceptors=[BearerToken(ADMIN)])
    try:
        c = Clients(channel)
        await c.plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=spy_package()))
        reports = {name: tmp_path / f"{name}.json" for name in ("victim", "spy")}
        for name, secret in (("victim", VICTIM_SECRET), ("spy", "")):
            await c.instances.CreateListenerInstance(
                li_pb2.CreateListenerInstanceRequest(
                    listener_instance_id=name,
                    listener_instance=li_pb2.ListenerInstance(
                        plugin="plugins/spy",
                        event_types=[event_type("TASK_FAIL")],
                        params={
                            "out": str(reports[name]),
                            "dataDir": str(data),
                            "password": secret,
                        },
                    ),
                )
            )
        # A plugin is opened for its first event.
        await c.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail"))
        )
        await eventually(lambda: all(p.exists() and p.stat().st_size for p in reports.values()), 60)
    finally:
        await channel.close()
        servers.stop()

    assert (data / "secret.key").exists() and (data / "listener.db").exists()
    key = (data / "secret.key").read_text().strip()
    victim = json.loads(reports["victim"].read_text())
    spy = json.loads(reports["spy"].read_text())
    # The victim's own child got its password: the sandbox does not break plugins.
    assert victim["config"]["password"] == VICTIM_SECRET
    # The spy: nothing of the alert server's environment…
    assert spy["environment"] == {}
    assert spy["own_environ_file"]["ok"] and "LISTENER" not in spy["own_environ_file"]["got"]
    assert INTERNAL not in json.dumps(spy) and ADMIN not in json.dumps(spy)
    # …neither the alert server's environ, the key file, the database nor the package cache…
    for attempt in (
        "parent_environ",
        "key_file",
        "database_file",
        "database_rows",
        "package_cache",
    ):
        assert not spy[attempt]["ok"], (attempt, spy[attempt])
        assert "Permission" in spy[attempt]["error"] or "unable to open" in spy[attempt]["error"]
    # …and of the params only its own: the other instance's secret is nowhere in its reach.
    assert set(spy["config"]) <= {"out", "dataDir", "password"}
    assert VICTIM_SECRET not in json.dumps(spy) and key not in json.dumps(spy)
    # The alert server said which sandbox it applied.
    assert "process-isolated plugins run" in servers.log("alert_server")


def test_the_child_environment_keeps_only_what_python_needs() -> None:
    parent = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/opt/x",
        "LISTENER_SECRET_KEY": "k",
        "LISTENER_INTERNAL_TOKEN": "t",
        "LISTENER_TOKENS": "admin:a",
        "LISTENER_DB_URL": "postgresql://u:p@h/db",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "HOME": "/root",
    }
    env = sandbox.child_environment(parent)
    assert not [k for k in env if k.startswith("LISTENER")]
    assert "AWS_SECRET_ACCESS_KEY" not in env and "HOME" not in env
    assert env["PATH"] == "/usr/bin" and env["LC_ALL"] == "C.UTF-8"
    assert env["PYTHONPATH"].endswith(os.pathsep + "/opt/x")


def test_a_configured_process_user_is_refused_when_it_cannot_be_used() -> None:
    import pytest

    with pytest.raises(ValueError, match="no user"):
        sandbox.choose_user("no-such-user-x9", sandbox.sys.executable)
