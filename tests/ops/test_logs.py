"""Logs: JSON lines with their fields, one audit line per admin action, delivery failures
naming instance and event, and never a parameter value."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from listener_client import ListenerClient, ListenerClientError
from listener_core import logs
from listener_core.config import ConfigError
from tests.support.databases import sqlite_url
from tests.support.samples import make_zip, manifest
from tests.support.servers import eventually, running_pair

SECRET = "pa55-do-not-log-me"
# A destination that is always down, configured with a secret.
DOWN_PLUGIN = """
from listener_common import ListenerPlugin, params

class Down(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Password("apiToken", title="API token", required=True),
                params.Input("region", title="Region")]

    async def open(self, config):
        self.token = config["apiToken"]

    async def on_event(self, event):
        raise RuntimeError("destination down")
"""


def test_json_formatter_writes_one_object_with_extras() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "alert_server.delivery",
            logging.WARNING,
            __file__,
            1,
            "instance %s failed",
            ("audit",),
            sys.exc_info(),
        )
    record.instance = "audit"
    record.event_id = "e-1"
    line = formatter.format(record)
    assert "\n" not in line  # the traceback too stays on the one line
    data = json.loads(line)
    assert data["message"] == "instance audit failed"
    assert data["level"] == "WARNING" and data["logger"] == "alert_server.delivery"
    assert data["instance"] == "audit" and data["event_id"] == "e-1"
    assert data["time"].endswith("+00:00") and "ValueError: boom" in data["exception"]
    assert "args" not in data and "msg" not in data


def test_unknown_log_format_is_a_config_error() -> None:
    assert isinstance(logs.handler("json").formatter, logs.JsonFormatter)
    with pytest.raises(ConfigError, match="log_format"):
        logs.handler("xml")


async def test_admin_actions_and_failures_are_logged_without_params(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    package = make_zip({"down.py": DOWN_PLUGIN}, manifest("down", "down:Down"))
    async with (
        # One key for both servers: the alert server decrypts what the API server sealed.
        running_pair(
            sqlite_url(tmp_path), tmp_path, secret_key=Fernet.generate_key().decode()
        ) as pair,
        ListenerClient(pair.api_addr) as client,
    ):
        broken = b"PK\x03\x04 not really a zip"
        with pytest.raises(ListenerClientError):
            await client.install_plugin(broken)
        await client.install_plugin(package)
        await client.create_instance(
            "hook",
            "down",
            params={"apiToken": SECRET, "region": "eu-secret-region"},
            event_types=["TASK_FAIL"],
            park_after=1,
        )
        await client.update_instance("hook", params={"apiToken": SECRET, "region": "us"})
        published = await client.publish({"task_fail": {"task_name": "extract"}})

        async def parked() -> bool:
            return (await client.get_instance("hook")).delivery.parked_count == 1

        await eventually(parked)
        await client.pause("hook")
        await client.delete_instance("hook")
        await client.uninstall_plugin("down")

    audit = [r for r in caplog.records if r.name == "listener.audit"]
    actions = [(r.action, r.resource, r.code) for r in audit]  # type: ignore[attr-defined]
    assert actions == [
        # Refused before a manifest named it: the package it sent.
        ("CreatePlugin", "packages/" + hashlib.sha256(broken).hexdigest(), "INVALID_ARGUMENT"),
        ("CreatePlugin", "plugins/down", "OK"),
        ("CreateListenerInstance", "listenerInstances/hook", "OK"),
        ("UpdateListenerInstance", "listenerInstances/hook", "OK"),
        ("PauseListenerInstance", "listenerInstances/hook", "OK"),
        ("DeleteListenerInstance", "listenerInstances/hook", "OK"),
        ("DeletePlugin", "plugins/down", "OK"),
    ]
    assert all(r.caller.startswith("peer:") for r in audit)  # type: ignore[attr-defined]

    failures = [r for r in caplog.records if getattr(r, "event_id", None) == published.id]
    assert failures and all(r.instance == "hook" for r in failures)  # type: ignore[attr-defined]
    assert any("parking" in r.getMessage() for r in failures)

    formatter = logs.JsonFormatter()
    everything = "\n".join(formatter.format(r) for r in caplog.records)
    assert SECRET not in everything and "eu-secret-region" not in everything
