"""The servers' event loop: uvloop by default, asyncio's own on request, and a clear stop
when uvloop is asked for but cannot be imported."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from listener_core.config import ConfigError
from listener_core.server import loop_name, run


async def _seen(into: list[object]) -> None:
    into.append(asyncio.get_running_loop())
    into.append(loop_name())


@pytest.mark.parametrize(
    ("event_loop", "kind"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)]
)
def test_run_uses_the_configured_loop_and_closes_it(event_loop: str, kind: type) -> None:
    seen: list[object] = []
    run(_seen(seen), event_loop)
    loop, name = seen
    assert isinstance(loop, kind) and name == event_loop
    assert isinstance(loop, asyncio.AbstractEventLoop) and loop.is_closed()


def test_a_missing_uvloop_says_how_to_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # an import of it now fails
    coro = _seen([])
    with pytest.raises(ConfigError, match="set event_loop = 'asyncio'"):
        run(coro, "uvloop")
    assert coro.cr_frame is None  # closed by run: it will never run
