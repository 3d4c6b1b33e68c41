"""Password params: encrypted at rest, opened only for the plugin, never in a response, a log
line or the database in clear; kept when an update leaves them out; old clear rows still load."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.fernet import Fernet
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from event_store.models import ListenerInstance
from listener.v1 import event_service_pb2, listener_instance_pb2, plugin_pb2
from listener_core import errors
from listener_core.config import Config, ConfigError
from listener_core.secrets import PREFIX, SecretBox, load_or_create_key, open_params
from tests.security.helpers import details, event_types, secret_package
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import sample_event
from tests.support.servers import Pair, eventually, running_pair

li_pb2 = listener_instance_pb2
FORM = [{"field": "apiKey", "type": "password"}, {"field": "url", "type": "input"}]


# -- the box ------------------------------------------------------------------------------


def test_seal_and_open() -> None:
    box = SecretBox([Fernet.generate_key()])
    sealed = box.seal("hunter2")
    assert sealed.startswith(PREFIX) and "hunter2" not in sealed
    assert box.seal("hunter2") != sealed  # randomised: equal secrets do not look equal
    assert box.open(sealed) == "hunter2"
    assert box.open("clear legacy value") == "clear legacy value"
    params = box.seal_params(FORM, {"apiKey": "k", "url": "http://x", "other": "o"})
    assert params["apiKey"].startswith(PREFIX)
    assert params["url"] == "http://x" and params["other"] == "o"
    assert box.seal_params(FORM, params) == params  # sealed values are not sealed twice
    assert box.seal_params(FORM, {"apiKey": ""}) == {"apiKey": ""}
    assert box.open_params(params) == {"apiKey": "k", "url": "http://x", "other": "o"}


def test_rotation_and_wrong_keys() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_old = SecretBox([old]).seal("s")
    rotated = SecretBox.from_config(Config.from_keys(secret_key=f"{new.decode()},{old.decode()}"))
    assert rotated.open(sealed_old) == "s"
    assert SecretBox([new]).open(rotated.seal("t")) == "t"  # the first key seals
    with pytest.raises(errors.FailedPrecondition, match="same secret_key") as caught:
        SecretBox([new]).open(sealed_old, "apiKey")
    assert caught.value.reason == "SECRET_KEY_MISMATCH"
    assert "s" not in caught.value.message.split("'apiKey'")[0][-3:]
    with pytest.raises(errors.FailedPrecondition, match="no secret_key"):
        open_params(None, {"apiKey": sealed_old})
    assert open_params(None, {"url": "clear"}) == {"url": "clear"}
    with pytest.raises(ConfigError, match="not a Fernet key"):
        SecretBox.from_config(Config.from_keys(secret_key="too-short"))


def test_generated_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    results: list[bytes] = []

    def load() -> None:
        results.append(load_or_create_key(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1  # racing servers agree on one key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != "secret.key"]  # no temp files left
    box = SecretBox.from_config(Config.from_keys(data_dir=str(tmp_path / "data")))
    assert SecretBox([results[0]]).open(box.seal("x")) == "x"


# -- through the servers ------------------------------------------------------------------

SECRET = "s3cr3t-Zq9VwX"
SECRET2 = "n3w-s3cr3t-Pk4"
SECRET3 = "never-st0red-Jd2"
MASK = "******"


class Recorder:
    """Keeps every response, so the test can look for secrets in all of them."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def __call__(self, call: Any) -> Any:
        reply = await call
        self.seen.append(reply)
        return reply

    def text(self) -> bytes:
        return b"".join(m.SerializeToString() + str(m).encode() for m in self.seen)


def database_bytes(directory: Path) -> bytes:
    """The SQLite database and its journal files, as bytes."""
    return b"".join(p.read_bytes() for p in directory.glob("listener.db*"))


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def publish_and_wait(pair: Pair, out: Path, record: Recorder) -> str:
    reply = await record(
        pair.clients.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail"))
        )
    )
    line = await eventually(lambda: [x for x in read_jsonl(out) if x["id"] == reply.id])
    return str(line[0]["key_sha256"])


async def stored_params(pair: Pair, instance_id: str) -> dict[str, str]:
    async with pair.api.store.reader() as session:
        row = await session.get(ListenerInstance, instance_id)
        assert row is not None
        return dict(json.loads(row.params_json))


async def update_params(
    pair: Pair, record: Recorder, params: dict[str, str]
) -> li_pb2.ListenerInstance:
    reply: li_pb2.ListenerInstance = await record(
        pair.clients.instances.UpdateListenerInstance(
            li_pb2.UpdateListenerInstanceRequest(
                listener_instance=li_pb2.ListenerInstance(
                    name="listenerInstances/vault", params=params
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["params"]),
            )
        )
    )
    return reply


async def test_a_secret_never_leaves_in_clear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    record = Recorder()
    key = Fernet.generate_key().decode()
    async with running_pair(sqlite_url(tmp_path), tmp_path, secret_key=key) as pair:
        plugins, instances = pair.clients.plugins, pair.clients.instances
        await record(plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=secret_package())))
        out1, out2 = tmp_path / "out1.jsonl", tmp_path / "out2.jsonl"
        created = await record(
            instances.CreateListenerInstance(
                li_pb2.CreateListenerInstanceRequest(
                    listener_instance_id="vault",
                    listener_instance=li_pb2.ListenerInstance(
                        plugin="plugins/secretive",
                        params={"logFile": str(out1), "apiKey": SECRET},
                        event_types=event_types("TASK_FAIL"),
                    ),
                )
            )
        )
        assert created.params["apiKey"] == MASK
        stored = await stored_params(pair, "vault")
        assert stored["apiKey"].startswith(PREFIX)
        # The plugin gets the clear value.
        assert await publish_and_wait(pair, out1, record) == digest(SECRET)

        got = await record(
            instances.GetListenerInstance(li_pb2.GetListenerInstanceRequest(name=created.name))
        )
        listed = await record(
            instances.ListListenerInstances(li_pb2.ListListenerInstancesRequest())
        )
        assert got.params["apiKey"] == MASK
        assert listed.listener_instances[0].params["apiKey"] == MASK

        # Left out of an update: kept. Sent back masked: kept. Either way the plugin still has it.
        await update_params(pair, record, {"logFile": str(out2)})
        assert (await stored_params(pair, "vault"))["apiKey"] == stored["apiKey"]
        assert await publish_and_wait(pair, out2, record) == digest(SECRET)
        await update_params(pair, record, {"logFile": str(out2), "apiKey": MASK})
        assert (await stored_params(pair, "vault"))["apiKey"] == stored["apiKey"]

        # A new value replaces it, sealed again.
        updated = await update_params(pair, record, {"logFile": str(out2), "apiKey": SECRET2})
        assert updated.params["apiKey"] == MASK
        assert (await stored_params(pair, "vault"))["apiKey"] != stored["apiKey"]
        assert await publish_and_wait(pair, out2, record) == digest(SECRET2)

        # A rejected request does not echo the secret either.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await update_params(pair, record, {"apiKey": SECRET3, "bogus": "x"})
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "params.bogus" in details(caught.value).fields
        errors_text = (caught.value.details() or "") + str(caught.value.trailing_metadata())

    logged = caplog.text + "".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    db_bytes = database_bytes(tmp_path)
    assert db_bytes, "the SQLite files are where the test expects them"
    for secret in (SECRET, SECRET2, SECRET3):
        assert secret.encode() not in record.text(), secret
        assert secret not in logged, secret
        assert secret.encode() not in db_bytes, secret
        assert secret not in errors_text, secret
    assert "listener_instances" in logged  # DEBUG SQL logging was on: the check saw real logs


async def test_rows_stored_in_clear_still_load_and_get_sealed(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    record = Recorder()
    async with running_pair(sqlite_url(tmp_path), tmp_path, secret_key=key) as pair:
        await pair.clients.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=secret_package())
        )
        out = tmp_path / "out.jsonl"
        await pair.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance_id="vault",
                listener_instance=li_pb2.ListenerInstance(
                    plugin="plugins/secretive",
                    params={"logFile": str(out), "apiKey": "temporary"},
                    event_types=event_types("TASK_FAIL"),
                ),
            )
        )
        # As a row written before encryption existed.
        async with pair.api.store.transaction() as session:
            row = await session.get(ListenerInstance, "vault")
            assert row is not None
            row.params_json = json.dumps({"logFile": str(out), "apiKey": "legacy-clear"})
        await pair.clients.instances.UpdateListenerInstance(  # display name only: re-applied
            li_pb2.UpdateListenerInstanceRequest(
                listener_instance=li_pb2.ListenerInstance(
                    name="listenerInstances/vault", display_name="Vault"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
        assert await publish_and_wait(pair, out, record) == digest("legacy-clear")
        got = await pair.clients.instances.GetListenerInstance(
            li_pb2.GetListenerInstanceRequest(name="listenerInstances/vault")
        )
        assert got.params["apiKey"] == MASK
        await update_params(pair, record, {"logFile": str(out)})
        sealed = (await stored_params(pair, "vault"))["apiKey"]
        assert sealed.startswith(PREFIX)
        assert SecretBox([key.encode()]).open(sealed) == "legacy-clear"


async def test_servers_with_different_keys_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without secret_key each server of the pair generates its own (their data_dir differ):
    the alert server cannot open the secret, and says why without showing it."""
    async with running_pair(sqlite_url(tmp_path), tmp_path, secret_key="") as pair:
        for which in (pair.api, pair.alert):
            key_file = Path(which.config.store.data_dir) / "secret.key"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        await pair.clients.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=secret_package())
        )
        await pair.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance_id="vault",
                listener_instance=li_pb2.ListenerInstance(
                    plugin="plugins/secretive",
                    params={"logFile": str(tmp_path / "o.jsonl"), "apiKey": SECRET},
                    event_types=event_types("TASK_FAIL"),
                ),
            )
        )
        await eventually(lambda: "cannot be decrypted" in caplog.text)
        assert "vault" not in pair.alert.host.runners
    assert SECRET not in caplog.text
