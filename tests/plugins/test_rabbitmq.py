"""The RabbitMQ plugin against the machine's RabbitMQ: routing keys, message properties,
clear errors, and delivery through the servers across a broker outage and a hot swap."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
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

HOST, PORT = os.environ.get("LISTENER_TEST_RABBITMQ", "127.0.0.1:5672").rsplit(":", 1)
URL = f"amqp://guest:guest@{HOST}:{PORT}/"
START = "rabbitmq-server -detached"


@pytest.fixture(scope="module")
def rabbitmq() -> ModuleType:
    return load_module("rabbitmq")


@pytest.fixture
async def broker() -> AsyncIterator[Any]:
    """A channel on the real broker; fails, never skips, when RabbitMQ is not running."""
    require_service("RabbitMQ", HOST, int(PORT), START)
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    yield channel
    await connection.close()


@pytest.fixture
async def exchange_and_queue(broker: Any) -> AsyncIterator[tuple[str, Any]]:
    """A unique durable topic exchange with a unique queue bound to ``listener.#``."""
    name = f"lt-{uuid.uuid4().hex[:12]}"
    exchange = await broker.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await broker.declare_queue(f"{name}-q", durable=False, auto_delete=False)
    await queue.bind(exchange, "listener.#")
    try:
        yield name, queue
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await broker.exchange_delete(name)


async def drain(queue: Any, count: int) -> list[Any]:
    """Waits until ``count`` messages have arrived and returns them in arrival order."""
    got: list[Any] = []

    async def arrived() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
        return len(got) >= count

    await eventually(arrived, timeout=60)
    return got


# -- no broker needed ------------------------------------------------------------------------


def test_routing_key_template(rabbitmq: ModuleType) -> None:
    data = make_event(1, "TASK_FAIL", project_name="etl.daily", workflow_name="a b").to_dict()
    assert rabbitmq.render("listener.{type}.{project_name}", data) == "listener.task_fail.etl_daily"
    assert rabbitmq.render("{workflow_name}/{host}", data) == "a_b/_"  # empty → _
    server_down = make_event(2, "SERVER_DOWN").to_dict()
    assert rabbitmq.render("x.{project_name}.{type}", server_down) == "x._.server_down"
    rabbitmq.check_template("listener.{type}.{task_name}", "routingKey")
    with pytest.raises(ValueError, match=r"unknown field \{projectname\}"):
        rabbitmq.check_template("listener.{projectname}", "routingKey")
    with pytest.raises(ValueError, match="routingKey template"):
        rabbitmq.check_template("listener.{type", "routingKey")
    with pytest.raises(ValueError, match="Unknown format code 'd'"):
        rabbitmq.check_template("listener.{sequence:05d}", "routingKey")


async def test_bad_params_fail_open_before_connecting(rabbitmq: ModuleType) -> None:
    plugin = rabbitmq.RabbitMQListener()
    cls = rabbitmq.RabbitMQListener
    with pytest.raises(ValueError, match="amqp://"):
        await plugin.open(typed(cls, {"url": "http://h/", "exchange": "x"}))
    with pytest.raises(ValueError, match="names no user"):
        await plugin.open(typed(cls, {"url": "amqp://h/", "password": "p", "exchange": "x"}))
    with pytest.raises(ValueError, match="unknown field"):
        await plugin.open(typed(cls, {"url": URL, "exchange": "x", "routingKey": "{nope}"}))


# -- against the real broker -----------------------------------------------------------------


async def test_publishes_persistent_messages_with_event_ids(
    rabbitmq: ModuleType, exchange_and_queue: tuple[str, Any]
) -> None:
    name, queue = exchange_and_queue
    plugin = rabbitmq.RabbitMQListener()
    await plugin.open(
        typed(
            rabbitmq.RabbitMQListener,
            {"url": "amqp://guest@" + f"{HOST}:{PORT}/", "password": "guest", "exchange": name},
        )
    )
    batch = [make_event(n, "TASK_FAIL", project_name="etl") for n in range(1, 21)]
    await plugin.on_events(batch)
    await plugin.on_event(make_event(21, "WORKFLOW_END", project_name="bi"))
    await plugin.close()
    got = await drain(queue, 21)
    assert [m.message_id for m in got] == [f"ev-{n}" for n in range(1, 22)]
    assert [json.loads(m.body) for m in got[:20]] == [e.to_dict() for e in batch]
    assert {m.routing_key for m in got[:20]} == {"listener.task_fail.etl"}
    assert got[20].routing_key == "listener.workflow_end.bi"
    first = got[0]
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.content_type == "application/json" and first.type == "TASK_FAIL"
    assert first.headers["sequence"] == 1 and first.headers["event-type"] == "TASK_FAIL"


async def test_cloudevents_binary_mode_on_the_real_broker(
    rabbitmq: ModuleType, exchange_and_queue: tuple[str, Any]
) -> None:
    """The AMQP binding's binary mode: the attributes as cloudEvents_* headers, the body and
    its content type as they were; the default mode has none of them."""
    name, queue = exchange_and_queue
    cls = rabbitmq.RabbitMQListener
    base = {"url": "amqp://guest@" + f"{HOST}:{PORT}/", "password": "guest", "exchange": name}
    plugin = cls()
    await plugin.open(typed(cls, {**base, "format": "cloudevents", "source": "/etl/prod"}))
    event = make_event(3, "WORKFLOW_END", project_name="etl")
    await plugin.on_event(event)
    await plugin.close()
    plain = cls()
    await plain.open(typed(cls, base))
    await plain.on_event(make_event(4, "WORKFLOW_END", project_name="etl"))
    await plain.close()
    cloud, default = await drain(queue, 2)
    assert json.loads(cloud.body) == event.to_dict()
    assert cloud.content_type == "application/json"
    ce = {k: v for k, v in cloud.headers.items() if k.startswith("cloudEvents_")}
    assert ce == {
        "cloudEvents_specversion": "1.0",
        "cloudEvents_id": "ev-3",
        "cloudEvents_source": "/etl/prod",
        "cloudEvents_type": "org.apache.dolphinscheduler.listener.workflow_end",
        "cloudEvents_sequence": "3",
        "cloudEvents_time": event.to_dict()["event_time"],
    }
    assert cloud.headers["event-type"] == "WORKFLOW_END"  # the plain headers stay
    assert not [k for k in default.headers if k.startswith("cloudEvents_")]


async def test_errors_say_what_is_wrong(
    rabbitmq: ModuleType, broker: Any, exchange_and_queue: tuple[str, Any]
) -> None:
    cls = rabbitmq.RabbitMQListener
    name, _ = exchange_and_queue
    closed_port = free_port()
    with pytest.raises(DeliveryError) as err:
        await cls().open(
            typed(
                cls,
                {
                    "url": f"amqp://guest@127.0.0.1:{closed_port}/",
                    "password": "pw9",
                    "exchange": name,
                },
            )
        )
    assert f"cannot connect to RabbitMQ at amqp://guest@127.0.0.1:{closed_port}/" in str(err.value)
    assert "pw9" not in str(err.value)

    with pytest.raises(DeliveryError, match="refused the login") as err:
        await cls().open(typed(cls, {"url": URL.replace(":guest@", ":wrong@"), "exchange": name}))
    assert "wrong" not in str(err.value)

    with pytest.raises(DeliveryError, match="already exists with other settings"):
        await cls().open(typed(cls, {"url": URL, "exchange": name, "exchangeType": "fanout"}))

    # mandatory: a message no queue takes fails the event instead of vanishing.
    strict = cls()
    await strict.open(
        typed(
            cls,
            {"url": URL, "exchange": name, "routingKey": "elsewhere.{type}", "mandatory": True},
        )
    )
    try:
        with pytest.raises(
            DeliveryError, match=r"no queue bound .* takes routing key 'elsewhere.task_fail'"
        ):
            await strict.on_event(make_event(1))
    finally:
        await strict.close()

    # The exchange deleted under a running instance: said, and the next attempt recovers.
    plugin = cls()
    await plugin.open(typed(cls, {"url": URL, "exchange": name}))
    try:
        await broker.exchange_delete(name)
        with pytest.raises(DeliveryError, match="no longer exists"):
            await plugin.on_event(make_event(2))
        await plugin.on_event(make_event(3))  # reconnects and declares the exchange again
    finally:
        await plugin.close()


# -- through the servers ---------------------------------------------------------------------


async def test_delivers_in_order_across_an_outage_and_a_hot_swap(
    tmp_path: Path, exchange_and_queue: tuple[str, Any]
) -> None:
    name, queue = exchange_and_queue
    proxy = TcpProxy(HOST, int(PORT))
    await proxy.start()
    try:
        async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
            c = pair.clients
            await install(c, "rabbitmq", tmp_path)
            values = {
                "url": f"amqp://guest@127.0.0.1:{proxy.port}/",
                "password": "guest",
                "exchange": name,
            }
            await create_instance(c, "mq", "rabbitmq", values)
            ids = await publish(c, run_events(1, 10))
            await wait_caught_up(c, "mq")
            assert proxy.open_links == 1

            await proxy.stop()  # the broker goes away
            ids += await publish(c, run_events(11, 10))
            await wait_blocked(
                c, "mq", f"cannot connect to RabbitMQ at amqp://guest@127.0.0.1:{proxy.port}/"
            )
            await proxy.start()  # and comes back
            await wait_caught_up(c, "mq")

            # A new version of the plugin takes over: the old connection is closed.
            await c.plugins.UpdatePlugin(
                plugin_pb2.UpdatePluginRequest(
                    plugin=plugin_pb2.Plugin(name="plugins/rabbitmq"),
                    package=package("rabbitmq", tmp_path, version="1.0.1"),
                )
            )
            ids += await publish(c, run_events(21, 5))
            await wait_caught_up(c, "mq")
            assert await eventually(lambda: proxy.open_links == 1)
            assert proxy.accepted >= 3  # first connection, after the outage, after the swap
    finally:
        await proxy.stop()

    got = await drain(queue, len(ids))
    # At least once: an event confirmed just as the link dropped may come twice; the first
    # arrival of each is in order and nothing is missing.
    first_seen = list(dict.fromkeys(m.message_id for m in got))
    assert first_seen == ids
    bodies = {m.message_id: json.loads(m.body) for m in got}
    assert all(bodies[i]["id"] == i for i in ids)
    keys = [m.routing_key for m in got[:5]]
    assert keys == [
        "listener.task_fail.etl",
        "listener.workflow_end.etl",
        "listener.workflow_added.etl",
        "listener.server_down._",  # no project_name on this event type
        "listener.task_start.etl",
    ]
