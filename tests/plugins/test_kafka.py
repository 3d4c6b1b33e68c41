"""The Kafka plugin: everything short of a broker on a fake producer (config, keys, headers,
values, batches, errors), and a real delivery when LISTENER_TEST_KAFKA names a broker."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import aiokafka.codec
import aiokafka.errors
import pytest

from listener_common import DeliveryError, events, params
from listener_common.errors import ParamValidationError
from tests.plugins.support import (
    FAST_RETRY,
    create_instance,
    install,
    load_module,
    make_event,
    publish,
    run_events,
    typed,
    wait_caught_up,
)
from tests.support.databases import sqlite_url
from tests.support.servers import running_pair

KAFKA = os.environ.get("LISTENER_TEST_KAFKA", "")
SKIP_REASON = (
    "no Kafka broker runs on this machine (it is not among its services); "
    "set LISTENER_TEST_KAFKA=host:port to run this test against one"
)


@pytest.fixture(scope="module")
def kafka() -> ModuleType:
    return load_module("kafka")


class FakeProducer:
    """Stands in for AIOKafkaProducer: records calls, acknowledges or fails as told."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.calls: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.start_error: Exception | None = None
        self.topics: dict[str, set[int]] = {"events": {0, 1, 2}}
        self.send_errors: dict[str, Exception] = {}  # event id → raised by send()
        self.ack_errors: dict[str, Exception] = {}  # event id → set on its future
        self.futures: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        self.calls.append("start")
        if self.start_error is not None:
            raise self.start_error

    async def stop(self) -> None:
        self.calls.append("stop")

    async def partitions_for(self, topic: str) -> set[int]:
        if topic not in self.topics:
            raise aiokafka.errors.UnknownTopicOrPartitionError()
        return self.topics[topic]

    async def send(self, topic: str, **record: Any) -> asyncio.Future[Any]:
        event_id = dict(record["headers"])["event-id"].decode()
        if event_id in self.send_errors:
            raise self.send_errors[event_id]
        self.sent.append({"topic": topic, **record})
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self.ack_errors.get(event_id)
        # Acknowledge later, as a broker does, so the plugin must really wait for them.
        asyncio.get_running_loop().call_later(
            0.01,
            lambda: future.set_exception(error) if error else future.set_result("metadata"),
        )
        self.futures.append(future)
        return future


def with_fake(kafka: ModuleType, producer: FakeProducer) -> Any:
    class Plugin(kafka.KafkaListener):  # type: ignore[misc, name-defined]
        def _make_producer(self, **kwargs: Any) -> Any:
            producer.kwargs = kwargs
            return producer

    return Plugin()


def config(kafka: ModuleType, **values: Any) -> dict[str, Any]:
    return typed(
        kafka.KafkaListener, {"bootstrapServers": "k1:9092, k2:9092", "topic": "events", **values}
    )


def test_form(kafka: ModuleType) -> None:
    form = params.form_json(kafka.KafkaListener)
    assert params.secret_fields(form) == {"password"}
    with pytest.raises(ParamValidationError) as err:
        params.validate_params(form, {"topic": "t", "acks": "2", "saslMechanism": "GSSAPI"})
    assert {f for f, _ in err.value.violations} == {"bootstrapServers", "acks", "saslMechanism"}


def test_producer_kwargs_defaults(kafka: ModuleType) -> None:
    assert kafka.producer_kwargs(config(kafka)) == {
        "bootstrap_servers": ["k1:9092", "k2:9092"],
        "client_id": "dolphinscheduler-listener",
        "acks": "all",
        "request_timeout_ms": 10000,
        "security_protocol": "PLAINTEXT",
    }


def test_producer_kwargs_sasl_tls_acks_compression(kafka: ModuleType) -> None:
    scram = kafka.producer_kwargs(
        config(
            kafka,
            saslMechanism="SCRAM-SHA-512",
            username="svc",
            password="pw",
            tls=True,
            acks="1",
            compression="gzip",
            timeout=2.5,
        )
    )
    assert scram["security_protocol"] == "SASL_SSL"
    assert (scram["sasl_mechanism"], scram["sasl_plain_username"]) == ("SCRAM-SHA-512", "svc")
    assert scram["sasl_plain_password"] == "pw" and isinstance(scram["ssl_context"], ssl.SSLContext)
    assert (scram["acks"], scram["compression_type"], scram["request_timeout_ms"]) == (
        1,
        "gzip",
        2500,
    )
    plain = kafka.producer_kwargs(
        config(kafka, saslMechanism="PLAIN", username="u", password="p", acks="0")
    )
    assert plain["security_protocol"] == "SASL_PLAINTEXT" and plain["acks"] == 0
    assert "ssl_context" not in plain
    assert kafka.producer_kwargs(config(kafka, tls=True))["security_protocol"] == "SSL"


def test_producer_kwargs_refuses_inconsistent_params(kafka: ModuleType) -> None:
    with pytest.raises(ValueError, match="needs a username and a password"):
        kafka.producer_kwargs(config(kafka, saslMechanism="PLAIN", username="u"))
    with pytest.raises(ValueError, match="at least one host:port"):
        kafka.producer_kwargs(config(kafka, bootstrapServers=" , "))
    if aiokafka.codec.has_lz4():
        assert kafka.producer_kwargs(config(kafka, compression="lz4"))["compression_type"] == "lz4"
    else:
        with pytest.raises(ValueError, match="compression lz4 needs the Python package cramjam"):
            kafka.producer_kwargs(config(kafka, compression="lz4"))


@pytest.mark.parametrize(
    ("event_type", "payload", "key"),
    [
        ("TASK_FAIL", {"workflow_instance_id": "9001", "task_code": "5"}, b"9001"),
        ("WORKFLOW_END", {"workflow_instance_id": "9002"}, b"9002"),
        ("WORKFLOW_REMOVED", {"workflow_definition_code": "1001"}, b"1001"),
        ("WORKFLOW_UPDATE", {"code": "1002"}, b"1002"),
        ("TASK_ADDED", {"code": "5003"}, b"5003"),
        ("TASK_REMOVED", {"task_code": "5004"}, b"5004"),
        ("SERVER_DOWN", {"host": "w1"}, b"ev-1"),
        ("TASK_START", {}, b"ev-1"),  # a run without an instance id (0): fall back to the id
    ],
)
def test_message_key(
    kafka: ModuleType, event_type: str, payload: dict[str, str], key: bytes
) -> None:
    event = events.from_dict({"id": "ev-1", "sequence": 1, "type": event_type, "payload": payload})
    assert kafka.message_key(event) == key


async def test_open_checks_the_topic_and_sends_batches_in_order(kafka: ModuleType) -> None:
    producer = FakeProducer()
    plugin = with_fake(kafka, producer)
    await plugin.open(config(kafka))
    assert producer.calls == ["start"]
    assert producer.kwargs["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    batch = [
        make_event(1, "TASK_START", workflow_instance_id="9001"),
        make_event(2, "TASK_FAIL", workflow_instance_id="9001"),
        make_event(3, "SERVER_DOWN"),
    ]
    await plugin.on_events(batch)
    assert all(f.done() for f in producer.futures)  # returned only once all were acknowledged
    assert [s["key"] for s in producer.sent] == [b"9001", b"9001", b"ev-3"]
    assert [json.loads(s["value"]) for s in producer.sent] == [e.to_dict() for e in batch]
    assert producer.sent[1]["headers"] == [("event-id", b"ev-2"), ("event-type", b"TASK_FAIL")]
    assert {s["topic"] for s in producer.sent} == {"events"}
    assert producer.sent[0]["timestamp_ms"] == 1704164645123  # the event time
    await plugin.on_event(make_event(4))
    assert len(producer.sent) == 4
    await plugin.close()
    assert producer.calls == ["start", "stop"]
    with pytest.raises(RuntimeError, match="not open"):
        await plugin.on_event(make_event(5))


async def test_a_failed_acknowledgement_fails_the_batch_after_all_settle(kafka: ModuleType) -> None:
    producer = FakeProducer()
    producer.ack_errors["ev-2"] = aiokafka.errors.RequestTimedOutError()
    plugin = with_fake(kafka, producer)
    await plugin.open(config(kafka))
    with pytest.raises(DeliveryError) as err:
        await plugin.on_events([make_event(n) for n in (1, 2, 3)])
    assert "Kafka at k1:9092,k2:9092 did not take event ev-2 on topic 'events'" in str(err.value)
    assert "RequestTimedOutError" in str(err.value)
    assert len(producer.sent) == 3 and all(f.done() for f in producer.futures)


async def test_a_failed_send_stops_the_batch_there(kafka: ModuleType) -> None:
    producer = FakeProducer()
    producer.send_errors["ev-2"] = aiokafka.errors.KafkaTimeoutError("buffer full")
    plugin = with_fake(kafka, producer)
    await plugin.open(config(kafka))
    with pytest.raises(DeliveryError, match=r"did not take event ev-2 .*buffer full"):
        await plugin.on_events([make_event(n) for n in (1, 2, 3)])
    assert [s["headers"][0][1] for s in producer.sent] == [b"ev-1"]  # ev-3 never queued
    assert all(f.done() for f in producer.futures)  # ev-1 was waited for, not left in flight


async def test_open_errors_say_what_is_wrong(kafka: ModuleType) -> None:
    producer = FakeProducer()
    producer.start_error = aiokafka.errors.KafkaConnectionError("Unable to bootstrap from k1")
    with pytest.raises(DeliveryError) as err:
        await with_fake(kafka, producer).open(config(kafka))
    assert str(err.value) == (
        "cannot connect to Kafka at k1:9092,k2:9092: KafkaConnectionError: "
        "Unable to bootstrap from k1"
    )
    assert producer.calls == ["start", "stop"]  # nothing left half-open

    producer = FakeProducer()
    producer.start_error = aiokafka.errors.SaslAuthenticationFailed("bad password")
    with pytest.raises(DeliveryError, match="check saslMechanism, username and password"):
        await with_fake(kafka, producer).open(
            config(kafka, saslMechanism="PLAIN", username="u", password="p")
        )

    producer = FakeProducer()
    with pytest.raises(DeliveryError, match=r"topic 'missing' does not exist .* create it first"):
        await with_fake(kafka, producer).open(config(kafka, topic="missing"))
    assert producer.calls == ["start", "stop"]


@pytest.mark.skipif(not KAFKA, reason=SKIP_REASON)
async def test_delivers_through_the_servers_to_a_real_broker(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"lt-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
            c = pair.clients
            await install(c, "kafka", tmp_path)
            await create_instance(c, "kf", "kafka", {"bootstrapServers": KAFKA, "topic": topic})
            ids = await publish(c, run_events(1, 20))
            await wait_caught_up(c, "kf", timeout=60)
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=KAFKA, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        records: list[Any] = []
        try:
            async with asyncio.timeout(60):
                while len(records) < len(ids):
                    for batch in (await consumer.getmany(timeout_ms=1000)).values():
                        records.extend(batch)
        finally:
            await consumer.stop()
    finally:
        await admin.delete_topics([topic])
        await admin.close()
    by_id = {dict(r.headers)["event-id"].decode(): r for r in records}
    assert set(by_id) == set(ids)
    for record in records:
        value = json.loads(record.value)
        assert dict(record.headers)["event-type"].decode() == value["type"]
        assert record.key == kafka_key(value)
    # One key's events keep their order inside its partition.
    for partition in {r.partition for r in records}:
        seqs: dict[bytes, list[int]] = {}
        for r in sorted((r for r in records if r.partition == partition), key=lambda r: r.offset):
            seqs.setdefault(r.key, []).append(json.loads(r.value)["sequence"])
        assert all(s == sorted(s) for s in seqs.values())


def kafka_key(value: dict[str, Any]) -> bytes:
    for name in ("workflow_instance_id", "workflow_definition_code", "task_code", "code"):
        if value.get(name):
            return str(value[name]).encode()
    return str(value["id"]).encode()


async def test_cloudevents_binary_mode_adds_the_kafka_binding_headers(kafka: ModuleType) -> None:
    """The Kafka protocol binding's binary mode: ce_* headers and content-type; the value is
    the same event JSON, so consumers of either kind read it."""
    producer = FakeProducer()
    plugin = with_fake(kafka, producer)
    await plugin.open(config(kafka, format="cloudevents", source="/etl/scheduler"))
    event = make_event(7, "TASK_FAIL")
    await plugin.on_event(event)
    await plugin.close()
    [sent] = producer.sent
    headers = dict(sent["headers"])
    assert headers == {
        "event-id": b"ev-7",
        "event-type": b"TASK_FAIL",
        "content-type": b"application/json",
        "ce_specversion": b"1.0",
        "ce_id": b"ev-7",
        "ce_source": b"/etl/scheduler",
        "ce_type": b"org.apache.dolphinscheduler.listener.task_fail",
        "ce_sequence": b"7",
        "ce_time": event.to_dict()["event_time"].encode(),
    }
    assert json.loads(sent["value"]) == event.to_dict()
    # The default stays plain: no CloudEvents headers.
    assert kafka.message_headers(event) == [("event-id", b"ev-7"), ("event-type", b"TASK_FAIL")]
