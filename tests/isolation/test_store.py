"""Packages are immutable and content-addressed: the same sha256 is never rewritten, and a
cached file that does not match its hash is fetched again from the database."""

from __future__ import annotations

import hashlib
from pathlib import Path

from alert_server import app as alert_app
from api_server import app as api_app
from event_store import catalog
from event_store.store import Store
from listener.v1 import event_service_pb2
from listener_core.config import Config
from tests.isolation.support import create_instance, install, recorder_package
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import sample_event
from tests.support.servers import FAST, Clients, eventually


async def test_the_same_sha256_is_never_rewritten(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path))
    try:
        data = recorder_package("1")
        sha = hashlib.sha256(data).hexdigest()
        async with store.transaction() as session:
            await catalog.put_package(session, sha, data)
        async with store.transaction() as session:  # a second put, other bytes: ignored
            await catalog.put_package(session, sha, b"not the package")
        async with store.reader() as session:
            stored = await catalog.get_package(session, sha)
        assert stored.data == data and stored.size == len(data)
    finally:
        await store.close()


async def test_a_corrupted_cache_file_is_fetched_again_on_restart(tmp_path: Path) -> None:
    import grpc

    url = sqlite_url(tmp_path)
    alert_cfg = Config.from_keys(
        db_url=url, data_dir=str(tmp_path / "alert"), alert_addr="127.0.0.1:0", **FAST
    )
    alert = await alert_app.start(alert_cfg)
    alert_addr = f"127.0.0.1:{alert.port}"
    api = await api_app.start(
        Config.from_keys(
            db_url=url,
            data_dir=str(tmp_path / "api"),
            api_addr="127.0.0.1:0",
            http_addr="127.0.0.1:0",
            alert_targets=(alert_addr,),
            **FAST,
        )
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{api.port}")
    c = Clients(channel)
    out = tmp_path / "out.jsonl"
    restarted: alert_app.AlertServer | None = None
    stopped = False
    try:
        plugin = await install(c, recorder_package("1"))
        await create_instance(c, "rec", "recorder", {"logFile": str(out)})
        await c.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail", 1))
        )
        await eventually(lambda: len(read_jsonl(out)) == 1)
        cached = alert.host.packages.cache.path_for(plugin.sha256)
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == plugin.sha256

        await alert.stop(0)
        stopped = True
        # A torn write or tampering: same name, other content (a valid zip, even).
        cached.write_bytes(recorder_package("666"))
        restarted = await alert_app.start(
            Config.from_keys(
                db_url=url, data_dir=str(tmp_path / "alert"), alert_addr=alert_addr, **FAST
            )
        )
        assert [p.version for p in restarted.host.packages.loaded.values()] == ["1"]
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == plugin.sha256
        await c.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail", 2))
        )
        lines = await eventually(lambda: len(got := read_jsonl(out)) >= 2 and got, timeout=60)
        assert [x["v"] for x in lines] == ["1", "1"]
    finally:
        await channel.close()
        await api.stop(0)
        if not stopped:
            await alert.stop(0)
        if restarted is not None:
            await restarted.stop(0)
