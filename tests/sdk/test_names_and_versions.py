"""One rule for plugin names and ids, enforced alike everywhere; the SDK's version rule."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from alert_server.loader import PackageLoader, PluginLoadError
from listener.v1 import plugin_pb2
from listener_common import ManifestError, PackageError, __version__
from listener_common.manifest import parse_manifest
from listener_common.names import NAME_RULE, name_problem
from listener_common.package import build_package, inspect_package
from listener_common.scaffold import new_project, sdk_range
from listener_common.testing import run_plugin, sample_event
from tests.support.samples import make_zip, manifest
from tests.support.servers import running_pair

PLUGIN = """
from listener_common import ListenerPlugin

class P(ListenerPlugin):
    async def on_task_fail(self, event):
        pass
"""


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("logger", True),
        ("disk-alerts", True),
        ("a", True),
        ("a" * 63, True),
        ("my_types", False),  # built, then refused as an id, before the rule was shared
        ("a" * 64, False),
        ("Logger", False),
        ("1plugin", False),
        ("ends-", False),
        ("x\n", False),
        ("", False),
    ],
)
def test_one_rule_for_names(name: str, ok: bool) -> None:
    problem = name_problem(name)
    assert (problem is None) is ok
    if not ok:
        assert problem is not None and NAME_RULE in problem


def test_builder_loader_scaffold_all_refuse_my_types_with_the_rule(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "listener-plugin.toml").write_text(manifest("my_types", "p:P"))
    (src / "p.py").write_text(PLUGIN)
    with pytest.raises(ManifestError) as built:
        build_package(src, tmp_path / "dist")
    assert NAME_RULE in str(built.value)
    assert not (tmp_path / "dist").exists()

    with pytest.raises(ValueError, match="not a valid plugin name") as scaffolded:
        new_project("my_types", tmp_path)
    assert NAME_RULE in str(scaffolded.value)

    data = make_zip({"p.py": PLUGIN}, manifest("my-types", "p:P"))
    zip_path = tmp_path / "ok.zip"
    zip_path.write_bytes(data)
    loader = PackageLoader()
    try:
        with pytest.raises(PluginLoadError) as loaded:
            loader.load("my_types", inspect_package(data), zip_path)
        assert NAME_RULE in str(loaded.value)
        good = loader.load("my-types", inspect_package(data), zip_path)
        assert good.plugin_class.__name__ == "P"
        loader.unload(good)
    finally:
        loader.close()


async def test_the_api_refuses_bad_names_and_ids_with_the_same_rule(tmp_path: Path) -> None:
    async with running_pair(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path) as pair:
        bad_manifest = make_zip({"p.py": PLUGIN}, manifest("my_types", "p:P"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.clients.plugins.CreatePlugin(
                plugin_pb2.CreatePluginRequest(package=bad_manifest)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert NAME_RULE in (caught.value.details() or "")

        good = make_zip({"p.py": PLUGIN}, manifest("my-types", "p:P"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.clients.plugins.CreatePlugin(
                plugin_pb2.CreatePluginRequest(package=good, plugin_id="my_types")
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert NAME_RULE in (caught.value.details() or "")

        created = await pair.clients.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=good)
        )
        assert created.name == "plugins/my-types"


# -- the SDK version and a manifest's sdk range -------------------------------------------


def test_a_new_plugin_declares_this_minor_up_to_the_next_major() -> None:
    assert sdk_range("1.1.0") == ">=1.1,<2"
    assert sdk_range("2.3.7") == ">=2.3,<3"
    assert sdk_range() == sdk_range(__version__)


@pytest.mark.parametrize(
    ("declared", "sdk", "ok"),
    [
        (">=1,<2", "1.1.0", True),  # an old plugin (written for 1.0) on a newer minor
        (">=1.0,<2", "1.9.3", True),
        (">=1.1,<2", "1.1.0", True),
        (">=1.1,<2", "1.0.4", False),  # needs what 1.1 added
        (">=1.1,<2", "2.0.0", False),  # a new major may break it
        ("==1.0.*", "1.1.0", False),  # pinning a minor: refused by the next release
    ],
)
def test_the_compatibility_rule(declared: str, sdk: str, ok: bool) -> None:
    text = f'name = "p"\nversion = "1"\nentry = "p:P"\nsdk = "{declared}"\n'
    assert parse_manifest(text.encode()).sdk_compatible(sdk) is ok


OLD_PLUGIN = """
# Written against SDK 1.0: the base class, typed events and params, nothing newer.
from listener_common import ListenerPlugin, events, params

class Old(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.InputNumber("limit", title="Limit", value=3)]

    async def open(self, config):
        self.limit = config["limit"]
        self.seen = []

    async def on_task_fail(self, event: events.TaskFail) -> None:
        self.seen.append(event.task_name)
"""


def test_an_old_plugin_loads_and_runs_on_this_newer_sdk(tmp_path: Path) -> None:
    assert __version__ != "1.0.0"
    data = make_zip({"old.py": OLD_PLUGIN}, manifest("old", "old:Old"))  # sdk = ">=1,<2"
    path = tmp_path / "old-1.0.0.zip"
    path.write_bytes(data)
    report = run_plugin(path, [sample_event("TASK_FAIL")], {"limit": "5"})
    assert report.outcomes() == ["delivered"] and report.config == {"limit": 5}

    newer = make_zip({"old.py": OLD_PLUGIN}, manifest("old", "old:Old").replace(">=1,<2", ">=2,<3"))
    with pytest.raises(PackageError, match=rf"needs listener_common <3,>=2; this is {__version__}"):
        inspect_package(newer)
