"""An unreachable alert server is logged once per change of state, then as a reminder, not
once per failed call (a publish nudges every alert server)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from alert_server import app as alert_app
from api_server.alert_fleet import AlertFleet
from listener_core.config import Config
from tests.support.databases import sqlite_url
from tests.support.servers import FAST, eventually, free_port

LOGGER = "api_server.alert_fleet"


def _lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and words in r.getMessage()]


async def test_unreachable_alert_server_logs_per_state_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    down = f"127.0.0.1:{free_port()}"
    fleet = AlertFleet([down], timeout=5, max_message_bytes=4 << 20, remind_every=3600)
    try:
        for n in range(60):
            await fleet.kick(f"i{n}")
            fleet.notify(n + 1)
        await eventually(lambda: fleet.reach[down].failures >= 70, timeout=30)
        assert len(_lines(caplog, "unreachable")) == 1, caplog.text

        fleet.reach[down].remind_every = 0.2  # a reminder once the interval has passed
        await asyncio.sleep(0.3)  # let the reminder interval pass (no condition to poll)
        await fleet.kick("again")
        assert len(_lines(caplog, "still unreachable")) == 1, caplog.text
        # The next interval starts at that reminder: calls within it log nothing (a long one,
        # so that a loaded machine cannot stretch these calls past it).
        fleet.reach[down].remind_every = 3600
        for n in range(10):
            await fleet.kick(f"j{n}")
        assert len(_lines(caplog, "still unreachable")) == 1, caplog.text
        logged = len(_lines(caplog, "unreachable"))

        config = Config.from_keys(
            db_url=sqlite_url(tmp_path),
            data_dir=str(tmp_path / "alert"),
            alert_addr=down,
            secret_key=Fernet.generate_key().decode(),
            **FAST,  # type: ignore[arg-type]
        )
        alert = await alert_app.start(config)
        try:

            async def back() -> bool:
                await fleet.kick("back")
                return fleet.reach[down].reachable

            await eventually(back, timeout=30, interval=0.2)
            assert len(_lines(caplog, "reachable again")) == 1, caplog.text
            for n in range(10):
                await fleet.kick(f"k{n}")
            assert len(_lines(caplog, "reachable again")) == 1
            assert len(_lines(caplog, "unreachable")) == logged  # nothing while coming back
        finally:
            await alert.stop(0)
    finally:
        await fleet.close()
