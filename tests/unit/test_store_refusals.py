"""The store refuses in its own words; the servers name what it refused.

The store never knows a resource name nor a status code (docs/architecture.md): its errors
carry plain ids, and the API server's error stage turns them into the statuses and messages
callers saw before the store stopped formatting them itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest

from alert_server.servicer import store_refusal
from api_server import refusals
from event_store import errors as store
from listener_core import errors
from listener_core.pipeline.error_status import to_service_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("refusal", "code", "reason", "message"),
    [
        (
            store.PluginNotFound("logger"),
            grpc.StatusCode.NOT_FOUND,
            "PLUGIN_NOT_FOUND",
            "plugin plugins/logger not found",
        ),
        (
            store.InstanceNotFound("audit"),
            grpc.StatusCode.NOT_FOUND,
            "INSTANCE_NOT_FOUND",
            "listener instance listenerInstances/audit not found",
        ),
        (
            store.PackageNotFound("ab12"),
            grpc.StatusCode.NOT_FOUND,
            "PACKAGE_NOT_FOUND",
            "package ab12 not found; upload it first",
        ),
        (
            store.NoPendingEvent("audit"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_HEAD_EVENT",
            "listenerInstances/audit has no pending event to skip",
        ),
        (
            store.EventsPurged(41),
            grpc.StatusCode.FAILED_PRECONDITION,
            "EVENTS_PURGED",
            "events up to sequence 41 were purged by retention; replay from 42 or later "
            "(parked events stay: redeliver them instead)",
        ),
    ],
)
def test_the_api_names_what_the_store_refused(
    refusal: store.StoreError, code: grpc.StatusCode, reason: str, message: str
) -> None:
    err = to_service_error(refusal, refusals.service_error)
    assert (err.code, err.reason, err.message) == (code, reason, message)


def test_without_the_api_s_names_a_store_refusal_is_no_status_of_its_own() -> None:
    assert isinstance(to_service_error(store.PluginNotFound("x")), errors.Internal)
    assert refusals.service_error(ValueError("x")) is None


def test_the_alert_server_answers_a_missing_row_with_not_found() -> None:
    err = to_service_error(store.InstanceNotFound("audit"), store_refusal)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")
    assert store_refusal(store.NoPendingEvent("audit")) is None


def _store_sources() -> list[Path]:
    return sorted(p for p in (ROOT / "event_store").glob("*.py"))


def test_the_store_knows_no_resource_name_and_no_status() -> None:
    found = []
    for path in _store_sources():
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("listener_core", "grpc"):
                names = {a.name for a in node.names}
                if node.module == "grpc" or "errors" in names:
                    found.append(f"{path.name}: imports {node.module} {sorted(names)}")
            elif isinstance(node, ast.Import) and any(a.name == "grpc" for a in node.names):
                found.append(f"{path.name}: imports grpc")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ("plugins/" in node.value or "listenerInstances/" in node.value)
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found
