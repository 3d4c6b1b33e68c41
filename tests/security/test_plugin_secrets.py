"""Credentials in plugin params that are not password boxes: the webhook's URL and headers.

A Slack-style hook URL is itself the credential, and the webhook README suggests an
``Authorization: Bearer …`` header: both are secret fields now (``secret=True`` in the SDK),
so they are encrypted at rest, masked in every response (a viewer's too) and never logged —
not by the servers and not by the HTTP library, which logs every request URL at INFO.
Both servers run as subprocesses, as an operator runs them, and their whole logs are read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from listener.v1 import listener_instance_pb2
from listener_common import ListenerPlugin
from listener_common import params as sdk_params
from listener_core.auth import BearerToken
from tests.plugins.support import (
    create_instance,
    install,
    load_module,
    publish,
    run_events,
    wait_caught_up,
)
from tests.plugins.test_webhook import Receiver
from tests.support.databases import sqlite_url
from tests.support.servers import Clients, ServerPair

ADMIN = "adm-hook-41c"
VIEWER = "view-hook-7d2"
URL_TOKEN = "hooktok-3b9e51f0"
HEADER_TOKEN = "bearer-c0ffee-77aa"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def test_every_bundled_plugin_marks_its_credentials_secret() -> None:
    """Params that carry credentials: password boxes, and URLs/headers that may hold them."""
    expected = {
        "webhook": {"secret", "url", "headers"},
        "kafka": {"password"},
        "nats": {"servers", "password", "token"},
        "rabbitmq": {"url", "password"},
        "redis": {"url", "password"},
        "logger": set(),
    }
    for name, fields in expected.items():
        module = load_module(name)
        plugin = next(
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, ListenerPlugin) and v is not ListenerPlugin
        )
        form = [p.to_form() for p in plugin.params()]
        assert sdk_params.secret_fields(form) == fields, name


async def test_webhook_url_and_headers_are_nowhere_in_responses_logs_or_the_database(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    servers = ServerPair(
        sqlite_url(data),
        data,
        extra_env={
            "LISTENER_TOKENS": f"admin:{ADMIN},viewer:{VIEWER}",
            "LISTENER_INTERNAL_TOKEN": "int-hook-19",
            "LISTENER_LOG_LEVEL": "DEBUG",  # the most a log could say
        },
    )
    servers.start_both()
    admin = grpc.aio.insecure_channel(servers.api_addr, interceptors=[BearerToken(ADMIN)])
    viewer = grpc.aio.insecure_channel(servers.api_addr, interceptors=[BearerToken(VIEWER)])
    try:
        c = Clients(admin)
        await install(c, "webhook", tmp_path)
        url = f"http://127.0.0.1:{receiver.port}/hooks/T01/B02?token={URL_TOKEN}"
        created = await create_instance(
            c,
            "hook",
            "webhook",
            {"url": url, "headers": f"Authorization: Bearer {HEADER_TOKEN}\nX-Team: data"},
        )
        ids = await publish(c, run_events(1, 3))
        await wait_caught_up(c, "hook", timeout=60)
        # Delivered with the real values…
        assert len(receiver.accepted()) == len(ids)
        assert all(r.target.endswith(f"token={URL_TOKEN}") for r in receiver.accepted())
        assert all(
            r.headers["authorization"] == f"Bearer {HEADER_TOKEN}" for r in receiver.accepted()
        )
        # …and shown to nobody: not in the create answer, nor to an admin or a viewer reading.
        answers = [created]
        for channel in (admin, viewer):
            stub = Clients(channel).instances
            answers.append(
                await stub.GetListenerInstance(
                    listener_instance_pb2.GetListenerInstanceRequest(name="listenerInstances/hook")
                )
            )
            listed = await stub.ListListenerInstances(
                listener_instance_pb2.ListListenerInstancesRequest()
            )
            answers.extend(listed.listener_instances)
        for answer in answers:
            assert answer.params["url"] == "******" and answer.params["headers"] == "******"
            text = answer.SerializeToString()
            assert URL_TOKEN.encode() not in text and HEADER_TOKEN.encode() not in text
        # An update that sends the mask back keeps the stored values.
        await Clients(admin).instances.UpdateListenerInstance(
            listener_instance_pb2.UpdateListenerInstanceRequest(
                listener_instance=listener_instance_pb2.ListenerInstance(
                    name="listenerInstances/hook",
                    params={"url": "******", "headers": "******", "timeout": "7"},
                ),
                update_mask={"paths": ["params"]},
            )
        )
        more = await publish(c, run_events(4, 1))
        await wait_caught_up(c, "hook", timeout=60)
        assert [r.headers["webhook-id"] for r in receiver.accepted()][-1] == more[0]
        assert receiver.accepted()[-1].target.endswith(f"token={URL_TOKEN}")
    finally:
        await admin.close()
        await viewer.close()
        servers.stop()

    logs = servers.log("api_server") + servers.log("alert_server")
    assert "POST" in logs or "hook" in logs  # the logs are there to be searched
    for needle in (URL_TOKEN, HEADER_TOKEN):
        assert needle not in logs
        for path in data.rglob("*"):
            if path.is_file() and not path.name.endswith(".log"):
                assert needle.encode() not in path.read_bytes(), path
