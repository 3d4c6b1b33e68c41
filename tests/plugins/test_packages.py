"""Every bundled plugin is a valid package with a form that validates, documented in its
README and in docs/plugins.md (whose grpcurl examples must pass the plugin's validation), and
installs through the public API like any third-party plugin."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import grpc
import pytest

from listener.v1 import event_pb2, listener_instance_pb2
from listener_common import params
from listener_common.errors import ParamValidationError
from listener_common.package import build_package, inspect_package
from tests.plugins.support import (
    FAST_RETRY,
    PLUGINS,
    REPO,
    create_instance,
    install,
    load_module,
    publish,
    run_events,
    wait_blocked,
)
from tests.support.databases import sqlite_url
from tests.support.servers import free_port, running_pair

BUNDLED = ["kafka", "logger", "nats", "rabbitmq", "redis", "webhook"]
SECRET_WORDS = ("password", "secret", "token")


def plugin_form(name: str) -> list[dict[str, Any]]:
    module = load_module(name)
    entry = (PLUGINS / name / "listener-plugin.toml").read_text()
    class_name = re.search(r'entry = "[\w.]+:(\w+)"', entry)
    assert class_name
    return params.form_json(getattr(module, class_name.group(1)))


def docs_section() -> str:
    text = (REPO / "docs" / "plugins.md").read_text()
    assert "\n## Bundled plugins\n" in "\n" + text
    return text[text.index("## Bundled plugins") :]


def docs_subsection(name: str) -> str:
    section = docs_section()
    start = section.index(f"\n### {name}\n")
    end = section.find("\n### ", start + 1)
    return section[start : end if end > 0 else None]


def test_the_plugins_folder_holds_exactly_the_bundled_plugins() -> None:
    found = sorted(p.parent.name for p in PLUGINS.glob("*/listener-plugin.toml"))
    assert found == BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_builds_into_a_valid_package(name: str, tmp_path: Path) -> None:
    built = build_package(PLUGINS / name, tmp_path)
    info = inspect_package(built.read_bytes())
    assert info.manifest.name == name and built.name == f"{name}-{info.manifest.version}.zip"
    assert info.manifest.sdk_compatible() and info.manifest.display_name
    assert info.top_level_names == frozenset({info.manifest.entry_module})  # one module
    assert build_package(PLUGINS / name, tmp_path / "again").read_bytes() == built.read_bytes()


@pytest.mark.parametrize("name", BUNDLED)
def test_form_validates_and_secrets_are_passwords(name: str) -> None:
    form = plugin_form(name)
    for entry in form:
        if any(word in entry["field"].lower() for word in SECRET_WORDS):
            assert entry["type"] == "password", f"{name}.{entry['field']} must be a password"
    required = {e["field"] for e in form if e["validate"]["required"]}
    with pytest.raises(ParamValidationError) as err:
        params.validate_params(form, {"noSuchField": "x"})
    assert {f for f, _ in err.value.violations} == required | {"noSuchField"}


@pytest.mark.parametrize("name", BUNDLED)
def test_readme_documents_every_param(name: str) -> None:
    readme = (PLUGINS / name / "README.md").read_text()
    assert "## Params" in readme
    for entry in plugin_form(name):
        assert f"| `{entry['field']}`" in readme, f"{name} README lacks {entry['field']}"


@pytest.mark.parametrize("name", BUNDLED)
def test_docs_list_the_plugin_with_a_valid_grpcurl_example(name: str) -> None:
    part = docs_subsection(name)
    form = plugin_form(name)
    for entry in form:
        assert f"| `{entry['field']}`" in part, f"docs/plugins.md: {name} lacks {entry['field']}"
    calls = [line for line in part.splitlines() if line.startswith("grpcurl ")]
    assert len(calls) == 1
    argv = shlex.split(calls[0])
    assert argv[-2:] == [
        "127.0.0.1:50051",
        "listener.v1.ListenerInstanceService/CreateListenerInstance",
    ]
    request = json.loads(argv[argv.index("-d") + 1])
    instance = request["listener_instance"]
    assert instance["plugin"] == f"plugins/{name}"
    params.validate_params(form, instance["params"])  # raises if the example is wrong
    for event_type in instance["event_types"]:
        event_pb2.EventType.Value(event_type)


async def test_all_install_through_the_api_and_params_are_checked(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
        c = pair.clients
        for name in BUNDLED:
            plugin = await install(c, name, tmp_path)
            assert plugin.name == f"plugins/{name}"
            assert [(p.field, p.type) for p in plugin.params] == [
                (e["field"], e["type"]) for e in plugin_form(name)
            ]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.instances.CreateListenerInstance(
                listener_instance_pb2.CreateListenerInstanceRequest(
                    listener_instance_id="bad",
                    listener_instance=listener_instance_pb2.ListenerInstance(
                        plugin="plugins/webhook",
                        params={"format": "xml", "timeout": "0"},
                        event_types=[event_pb2.EventType.Value("EVENT_TYPE_TASK_FAIL")],
                    ),
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for field in ("url", "format", "timeout"):
            assert field in (err.value.details() or "")


async def test_unreachable_destinations_block_with_clear_errors(tmp_path: Path) -> None:
    """Nothing listens on ``port``: every instance is blocked and says which destination, where,
    and why (the brokers' plugins fail in ``open``, the webhook on its first request)."""
    port = free_port()
    cases = {
        "kafka": (
            {"bootstrapServers": f"127.0.0.1:{port}", "topic": "t"},
            "cannot connect to Kafka",
        ),
        "nats": ({"servers": f"nats://127.0.0.1:{port}", "timeout": "1"}, "cannot connect to NATS"),
        "rabbitmq": (
            {"url": f"amqp://guest@127.0.0.1:{port}/", "exchange": "x"},
            "cannot connect to RabbitMQ",
        ),
        "redis": ({"url": f"redis://127.0.0.1:{port}/0", "stream": "s"}, "cannot reach Redis"),
        "webhook": ({"url": f"http://127.0.0.1:{port}/hook"}, "cannot connect to"),
    }
    async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
        c = pair.clients
        for name, (values, _) in cases.items():
            await install(c, name, tmp_path)
            await create_instance(c, f"to-{name}", name, values)
        await publish(c, run_events(1, 1))
        for name, (_, says) in cases.items():
            got = await wait_blocked(c, f"to-{name}", says, f"127.0.0.1:{port}")
            assert got.delivery.pending_count == 1
