"""The short chaos run (``python -m chaos`` is the long one): real servers, the store cut off
from one alert server and from all, an outage longer than the lease, kill -9 of every kind
of server; nothing lost, no first delivery out of order, never two deliverers at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import run_backend


@pytest.mark.parametrize(("backend", "seconds"), [("postgresql", 20.0), ("sqlite", 10.0)])
async def test_short_chaos_run(backend: str, seconds: float, tmp_path: Path) -> None:
    outcome = await run_backend(backend, seconds, workdir=tmp_path)
    print(outcome.text())
    kinds = 5 if backend == "postgresql" else 2  # cut one, cut all, outage, kill x2 / kill x2
    assert len(outcome.disruptions) == kinds, outcome.text()
    assert outcome.ok, outcome.text()
    assert outcome.acked > 200, outcome.text()
