"""The loader's namespaces: same-name modules and bundled libraries stay apart."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_server.loader import ROOT, PackageLoader, PluginLoadError
from listener_common import ListenerPlugin
from listener_common.package import inspect_package
from tests.support.samples import make_zip, manifest

PLUGIN = """
from listener_common import ListenerPlugin
import utils
import vlib.core
from vlib import core as core2
import vlib.core as c3

class P(ListenerPlugin):
    def where(self):
        import vlib.core as late  # absolute import inside a function body
        return utils.NAME, vlib.core.VERSION, core2.VERSION, c3.VERSION, late.VERSION
"""


def package(tag: str) -> bytes:
    return make_zip(
        {
            "plug.py": PLUGIN,
            "utils.py": f"NAME = 'utils-{tag}'\n",
            "vlib/__init__.py": "",
            "vlib/core.py": f"from . import helper\nVERSION = 'vlib-{tag}-' + helper.X\n",
            "vlib/helper.py": "X = 'h'\n",
        },
        manifest("demo", "plug:P", version=tag),
    )


@pytest.fixture
def loader() -> Iterator[PackageLoader]:
    ldr = PackageLoader()
    yield ldr
    ldr.close()


def load(loader: PackageLoader, tmp_path: Path, data: bytes, plugin_id: str = "demo"):  # type: ignore[no-untyped-def]
    info = inspect_package(data)
    path = tmp_path / f"{info.sha256}.zip"
    path.write_bytes(data)
    return loader.load(plugin_id, info, path)


def test_two_versions_side_by_side_each_see_their_own_modules(
    loader: PackageLoader, tmp_path: Path
) -> None:
    one = load(loader, tmp_path, package("1.0"))
    two = load(loader, tmp_path, package("2.0"))
    assert one.prefix != two.prefix and one.prefix.startswith(ROOT + ".")
    assert one.plugin_class().where() == ("utils-1.0",) + ("vlib-1.0-h",) * 4  # type: ignore[attr-defined]
    assert two.plugin_class().where() == ("utils-2.0",) + ("vlib-2.0-h",) * 4  # type: ignore[attr-defined]
    assert issubclass(one.plugin_class, ListenerPlugin) and issubclass(
        two.plugin_class, ListenerPlugin
    )
    assert "utils" not in sys.modules and "vlib" not in sys.modules
    assert "listener_common" in sys.modules  # always the host's copy


def test_unload_leaves_nothing_behind(loader: PackageLoader, tmp_path: Path) -> None:
    loaded = load(loader, tmp_path, package("1.0"))
    prefix = loaded.prefix
    module_ref = weakref.ref(sys.modules[prefix + ".plug"])
    class_ref = weakref.ref(loaded.plugin_class)
    loader.unload(loaded)
    del loaded
    gc.collect()
    assert not [n for n in sys.modules if n.startswith(prefix)]
    assert not [k for k in sys.path_importer_cache if str(tmp_path) in k]
    assert module_ref() is None and class_ref() is None


def test_load_errors_say_what_is_wrong(loader: PackageLoader, tmp_path: Path) -> None:
    bad = make_zip({"plug.py": "raise ValueError('boom at import')\n"}, manifest("bad", "plug:P"))
    with pytest.raises(PluginLoadError, match="boom at import"):
        load(loader, tmp_path, bad)
    assert not [n for n in sys.modules if "bad_1_0_0" in n]
