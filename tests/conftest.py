"""Shared fixtures: a real database of each kind, created per test and dropped after."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.databases import database

# API servers that tests start without naming an HTTP address (subprocesses inherit this) take
# a free port instead of the default 8080, which parallel runs would fight over.
os.environ.setdefault("LISTENER_HTTP_ADDR", "127.0.0.1:0")

BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each backend the store supports, on the machine's real servers."""
    async with database(request.param, tmp_path) as url:
        yield url
