"""The NATS plugin against the machine's NATS with JetStream: subjects, Nats-Msg-Id
de-duplication, clear errors, and delivery through the servers across an outage, lost
acknowledgements (a real redelivery) and a hot swap."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import nats
import pytest

from listener.v1 import plugin_pb2
from listener_common import DeliveryError
from tests.plugins.support import (
    FAST_RETRY,
    TcpProxy,
    create_instance,
    install,
    load_module,
    make_event,
    package,
    publish,
    require_service,
    run_events,
    typed,
    wait_blocked,
    wait_caught_up,
)
from tests.support.databases import sqlite_url
from tests.support.servers import eventually, free_port, running_pair

HOST, PORT = os.environ.get("LISTENER_TEST_NATS", "127.0.0.1:4222").rsplit(":", 1)
SERVER = f"nats://{HOST}:{PORT}"
START = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)


@pytest.fixture(scope="module")
def nats_plugin() -> ModuleType:
    return load_module("nats")


@pytest.fixture
async def jetstream() -> AsyncIterator[Any]:
    """A JetStream context on the real server; fails, never skips, when NATS is not running."""
    require_service("NATS", HOST, int(PORT), START)
    nc = await nats.connect(SERVER)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def stream(jetstream: Any) -> AsyncIterator[tuple[str, str]]:
    """A unique stream capturing ``<prefix>.>``; yields (stream name, subject prefix)."""
    tag = uuid.uuid4().hex[:12]
    name, prefix = f"LT_{tag}", f"lt_{tag}"
    await jetstream.add_stream(name=name, subjects=[f"{prefix}.>"])
    try:
        yield name, prefix
    finally:
        await jetstream.delete_stream(name)


async def read_stream(js: Any, name: str) -> list[Any]:
    info = await js.stream_info(name)
    return [await js.get_msg(name, seq) for seq in range(1, info.state.last_seq + 1)]


# -- no server needed ------------------------------------------------------------------------


def test_subject_template(nats_plugin: ModuleType) -> None:
    data = make_event(1, "TASK_FAIL", project_name="etl daily", workflow_name="a.b*>").to_dict()
    assert nats_plugin.render("ds.{type}.{project_name}", data) == "ds.task_fail.etl_daily"
    assert nats_plugin.render("ds.{workflow_name}.{host}", data) == "ds.a_b__._"
    nats_plugin.check_template("ds.{type}.{project_name}")
    for bad, problem in [
        ("ds..{type}", "non-empty tokens"),
        ("ds.*", "wildcards"),
        ("ds.{project}", "unknown field"),
        ("ds.{sequence:x}", "Unknown format code 'x'"),
    ]:
        with pytest.raises(ValueError, match=problem):
            nats_plugin.check_template(bad)


def test_message_headers_carry_the_event_id(nats_plugin: ModuleType) -> None:
    plugin = nats_plugin.NatsListener()
    plugin._subject = "ds.{type}"
    subject, payload, headers = plugin.message(make_event(4, "WORKFLOW_START"))
    assert subject == "ds.workflow_start"
    assert json.loads(payload) == make_event(4, "WORKFLOW_START").to_dict()
    assert headers == {
        "Nats-Msg-Id": "ev-4",
        "event-type": "WORKFLOW_START",
        "event-sequence": "4",
    }


# -- against the real server -----------------------------------------------------------------


async def test_cloudevents_binary_mode_on_the_real_server(
    nats_plugin: ModuleType, jetstream: Any, stream: tuple[str, str]
) -> None:
    """The NATS binding's binary mode: ce-* headers and content-type in the stored message,
    the payload the same event JSON, Nats-Msg-Id still the event id."""
    name, prefix = stream
    cls = nats_plugin.NatsListener
    plugin = cls()
    await plugin.open(
        typed(
            cls,
            {
                "servers": SERVER,
                "subject": prefix + ".{type}",
                "stream": name,
                "format": "cloudevents",
                "source": "/etl/prod",
            },
        )
    )
    event = make_event(5, "TASK_FAIL")
    await plugin.on_event(event)
    await plugin.close()
    [stored] = await read_stream(jetstream, name)
    assert json.loads(stored.data) == event.to_dict()
    ce = {k: v for k, v in stored.headers.items() if k.startswith("ce-")}
    assert ce == {
        "ce-specversion": "1.0",
        "ce-id": "ev-5",
        "ce-source": "/etl/prod",
        "ce-type": "org.apache.dolphinscheduler.listener.task_fail",
        "ce-sequence": "5",
        "ce-time": event.to_dict()["event_time"],
    }
    assert stored.headers["content-type"] == "application/json"
    assert stored.headers["Nats-Msg-Id"] == "ev-5"


async def test_publishes_in_order_and_deduplicates_redeliveries(
    nats_plugin: ModuleType, jetstream: Any, stream: tuple[str, str]
) -> None:
    name, prefix = stream
    plugin = nats_plugin.NatsListener()
    cls = nats_plugin.NatsListener
    await plugin.open(
        typed(cls, {"servers": SERVER, "subject": prefix + ".{type}", "stream": name})
    )
    batch = [make_event(n) for n in range(1, 31)]
    await plugin.on_events(batch)
    await plugin.on_events(batch[10:20])  # redelivered: same ids
    await plugin.on_event(batch[0])
    await plugin.close()
    stored = await read_stream(jetstream, name)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [e.id for e in batch]
    assert [json.loads(m.data) for m in stored] == [e.to_dict() for e in batch]
    assert {m.subject for m in stored} == {f"{prefix}.task_fail"}


async def test_errors_say_what_is_wrong(nats_plugin: ModuleType, stream: tuple[str, str]) -> None:
    cls = nats_plugin.NatsListener
    name, prefix = stream
    closed = free_port()
    with pytest.raises(DeliveryError) as err:
        await cls().open(typed(cls, {"servers": f"nats://u:pw7@127.0.0.1:{closed}", "timeout": 1}))
    assert f"cannot connect to NATS at nats://127.0.0.1:{closed}" in str(err.value)
    assert "ConnectionRefusedError" in str(err.value) and "pw7" not in str(err.value)

    with pytest.raises(DeliveryError, match=f"stream '{name}_missing' does not exist"):
        await cls().open(typed(cls, {"servers": SERVER, "stream": name + "_missing"}))

    plugin = cls()
    await plugin.open(typed(cls, {"servers": SERVER, "subject": "nowhere_" + prefix + ".{type}"}))
    try:
        with pytest.raises(
            DeliveryError, match=r"no JetStream stream .* captures subject 'nowhere_"
        ):
            await plugin.on_event(make_event(1))
        plugin._subject = prefix + ".{type}"
        await plugin.on_event(make_event(2))  # the same connection goes on once it is fixed
    finally:
        await plugin.close()


# -- through the servers ---------------------------------------------------------------------


async def test_delivers_once_in_order_across_outage_lost_acks_and_hot_swap(
    tmp_path: Path, jetstream: Any, stream: tuple[str, str]
) -> None:
    name, prefix = stream
    proxy = TcpProxy(HOST, int(PORT))
    await proxy.start()
    try:
        async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
            c = pair.clients
            await install(c, "nats", tmp_path)
            values = {
                "servers": f"nats://127.0.0.1:{proxy.port}",
                "subject": prefix + ".{type}.{project_name}",
                "stream": name,
                "timeout": "1",
            }
            await create_instance(c, "js", "nats", values)
            ids = await publish(c, run_events(1, 10))
            await wait_caught_up(c, "js")

            await proxy.stop()  # the server goes away
            ids += await publish(c, run_events(11, 10))
            await wait_blocked(c, "js", f"cannot connect to NATS at nats://127.0.0.1:{proxy.port}")
            await proxy.start()
            await wait_caught_up(c, "js")

            # Acknowledgements get lost: JetStream stores the messages, the plugin never hears
            # so, the events fail and are delivered again with the same Nats-Msg-Id.
            proxy.swallow_replies = True
            ids += await publish(c, run_events(21, 5))
            await wait_blocked(c, "js", "no JetStream acknowledgement within 1s")
            assert (await jetstream.stream_info(name)).state.messages > 20
            proxy.swallow_replies = False
            proxy.cut()
            await wait_caught_up(c, "js")

            await c.plugins.UpdatePlugin(
                plugin_pb2.UpdatePluginRequest(
                    plugin=plugin_pb2.Plugin(name="plugins/nats"),
                    package=package("nats", tmp_path, version="1.0.1"),
                )
            )
            ids += await publish(c, run_events(26, 5))
            await wait_caught_up(c, "js")
            assert await eventually(lambda: proxy.open_links == 1)  # the old one was closed
    finally:
        await proxy.stop()

    stored = await read_stream(jetstream, name)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ids  # each once, in order
    assert [json.loads(m.data)["id"] for m in stored] == ids
    assert stored[0].subject == f"{prefix}.task_fail.etl"
    assert stored[3].subject == f"{prefix}.server_down._"
