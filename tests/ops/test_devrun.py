"""``make run``'s banner says which built packages the store already has: after a restart on
the same store, the logger is no longer offered as "ready to install"."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener_common.package import build_package
from listener_core import devrun
from listener_core.config import Config
from tests.ops.helpers import cli
from tests.support.databases import sqlite_url
from tests.support.servers import REPO, ServerPair


def test_banner_tells_installed_from_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "dist" / "plugins"
    package = build_package(REPO / "plugins" / "logger", dist)
    monkeypatch.chdir(tmp_path)  # the banner looks in ./dist/plugins, as make run leaves it
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    try:
        pair.start_both()
        config = Config.from_keys(api_addr=pair.api_addr)
        api = pair.procs["api_server"]
        before = devrun.banner(config, api)
        assert f"ready to install: dist/plugins/{package.name}" in before, before
        assert "already installed" not in before
        assert cli("plugin", "install", str(package), server=pair.api_addr).returncode == 0
        after = devrun.banner(config, api)
        assert "ready to install: none" in after, after
        assert f"already installed: dist/plugins/{package.name} (as plugins/logger)" in after
    finally:
        pair.stop()
