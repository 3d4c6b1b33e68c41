"""Shared fixtures: a real database of each kind, created per test and dropped after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.databases import database

BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each backend the store supports, on the machine's real servers."""
    async with database(request.param, tmp_path) as url:
        yield url
