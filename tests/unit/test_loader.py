"""The loader's namespaces: same-name modules, side-by-side versions and bundled libraries
stay apart, and importlib.import_module is redirected like an import statement."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alert_server.loader import ROOT, LoadedPackage, PackageLoader, PluginLoadError
from listener_common import ListenerPlugin
from listener_common.errors import PackageError
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

# Every way a plugin can reach a module by name through importlib.
IMPORTLIB_PLUGIN = """
import importlib
import importlib.util
from importlib import import_module
from listener_common import ListenerPlugin

AT_IMPORT = importlib.import_module("vlib.core").VERSION

class P(ListenerPlugin):
    def where(self):
        return (
            AT_IMPORT,
            importlib.import_module("vlib.core").VERSION,
            import_module("vlib").core.VERSION,
            importlib.import_module(".core", importlib.import_module("vlib").__name__).VERSION,
            __import__("vlib.core", fromlist=["VERSION"]).VERSION,
            importlib.util.find_spec("json") is not None,  # the rest of importlib is real
            importlib.import_module("json").__name__,      # other names pass through
        )
"""


def package(tag: str, *, name: str = "demo", plugin: str = PLUGIN) -> bytes:
    return make_zip(
        {
            "plug.py": plugin,
            "utils.py": f"NAME = 'utils-{tag}'\n",
            "vlib/__init__.py": "",
            "vlib/core.py": f"from . import helper\nVERSION = 'vlib-{tag}-' + helper.X\n",
            "vlib/helper.py": "X = 'h'\n",
        },
        manifest(name, "plug:P", version=tag),
    )


@pytest.fixture
def loader() -> Iterator[PackageLoader]:
    ldr = PackageLoader()
    yield ldr
    ldr.close()


@pytest.fixture
def host_modules(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The alert server's own ``utils`` and ``vlib``, importable from sys.path."""
    site = tmp_path / "host-site"
    (site / "vlib").mkdir(parents=True)
    (site / "utils.py").write_text("NAME = 'host-utils'\n")
    (site / "vlib" / "__init__.py").write_text("")
    (site / "vlib" / "core.py").write_text("VERSION = 'host-vlib'\n")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        import utils  # type: ignore[import-not-found]
        import vlib.core  # type: ignore[import-not-found]

        yield {"utils": utils, "vlib": vlib, "vlib.core": vlib.core}
    finally:
        sys.path.remove(str(site))
        for name in ("utils", "vlib", "vlib.core"):
            sys.modules.pop(name, None)


def load(
    loader: PackageLoader, tmp_path: Path, data: bytes, plugin_id: str = "demo"
) -> LoadedPackage:
    info = inspect_package(data)
    path = tmp_path / f"{info.sha256}.zip"
    path.write_bytes(data)
    return loader.load(plugin_id, info, path)


def where(loaded: LoadedPackage) -> tuple[str, ...]:
    return loaded.plugin_class().where()  # type: ignore[attr-defined,no-any-return]


def test_same_name_modules_each_see_their_own_and_none_enters_sys_modules(
    loader: PackageLoader, tmp_path: Path, host_modules: dict[str, Any]
) -> None:
    one = load(loader, tmp_path, package("1.0", name="one"), "one")
    two = load(loader, tmp_path, package("1.0", name="two"), "two")
    # Both bundle ``utils`` and ``vlib``; so does the host (on sys.path, already imported).
    assert where(one)[0] == "utils-1.0" and where(two)[0] == "utils-1.0"
    assert sys.modules[f"{one.prefix}.utils"] is not sys.modules[f"{two.prefix}.utils"]
    assert sys.modules["utils"] is host_modules["utils"]
    assert sys.modules["vlib.core"] is host_modules["vlib.core"]
    assert host_modules["utils"].NAME == "host-utils"
    plugin_names = [n for n in sys.modules if n.startswith(ROOT + ".")]
    assert {n.split(".", 2)[2] for n in plugin_names if n.count(".") >= 2} == {
        "plug",
        "utils",
        "vlib",
        "vlib.core",
        "vlib.helper",
    }
    loader.unload(one)
    loader.unload(two)
    assert sys.modules["utils"] is host_modules["utils"]


def test_without_a_host_copy_no_bare_name_enters_sys_modules(
    loader: PackageLoader, tmp_path: Path
) -> None:
    load(loader, tmp_path, package("1.0"))
    assert "utils" not in sys.modules and "vlib" not in sys.modules
    assert "vlib.core" not in sys.modules


def test_two_versions_side_by_side_each_under_its_own_prefix(
    loader: PackageLoader, tmp_path: Path
) -> None:
    one = load(loader, tmp_path, package("1.0"))
    two = load(loader, tmp_path, package("2.0"))
    assert one.prefix == f"{ROOT}.demo_1_0_{one.sha256[:12]}"
    assert two.prefix == f"{ROOT}.demo_2_0_{two.sha256[:12]}"
    assert where(one) == ("utils-1.0",) + ("vlib-1.0-h",) * 4
    assert where(two) == ("utils-2.0",) + ("vlib-2.0-h",) * 4
    # The SDK is the host's for both: one ListenerPlugin class, so isinstance works.
    objs = [one.plugin_class(), two.plugin_class()]
    assert all(isinstance(o, ListenerPlugin) for o in objs)
    assert one.plugin_class is not two.plugin_class
    assert sys.modules["listener_common"].ListenerPlugin is ListenerPlugin
    assert not [n for n in sys.modules if n.endswith(".listener_common")]


def test_same_version_with_other_content_gets_another_prefix(
    loader: PackageLoader, tmp_path: Path
) -> None:
    one = load(loader, tmp_path, package("1.0"))
    rebuilt = package("1.0", plugin=PLUGIN + "\n# rebuilt\n")
    two = load(loader, tmp_path, rebuilt)
    assert one.version == two.version and one.prefix != two.prefix


def test_a_package_bundling_the_sdk_is_refused(loader: PackageLoader, tmp_path: Path) -> None:
    files = {
        "plug.py": "from listener_common import ListenerPlugin\nclass P(ListenerPlugin): pass\n",
        "listener_common/__init__.py": "class ListenerPlugin: pass\n",
    }
    data = make_zip(files, manifest("sneaky", "plug:P"))
    with pytest.raises(PackageError, match="listener_common"):
        inspect_package(data)
    # The loader does not rely on inspect_package having been run.
    good = inspect_package(make_zip({"plug.py": files["plug.py"]}, manifest("sneaky", "plug:P")))
    forged = dataclasses.replace(good, top_level_names=frozenset({"plug", "listener_common"}))
    path = tmp_path / "forged.zip"
    path.write_bytes(data)
    with pytest.raises(PluginLoadError, match="listener_common"):
        loader.load("sneaky", forged, path)
    assert not [n for n in sys.modules if "sneaky" in n]


def test_import_module_is_redirected_to_the_package_own_copy(
    loader: PackageLoader, tmp_path: Path, host_modules: dict[str, Any]
) -> None:
    """The decision documented in the loader and docs/plugins.md: redirect, never the host's."""
    one = load(loader, tmp_path, package("1.0", plugin=IMPORTLIB_PLUGIN))
    two = load(loader, tmp_path, package("2.0", plugin=IMPORTLIB_PLUGIN))
    assert where(one) == ("vlib-1.0-h",) * 5 + (True, "json")
    assert where(two) == ("vlib-2.0-h",) * 5 + (True, "json")
    assert host_modules["vlib.core"].VERSION == "host-vlib"
    assert importlib.import_module("vlib.core") is host_modules["vlib.core"]  # host unchanged


def test_load_errors_say_what_is_wrong(loader: PackageLoader, tmp_path: Path) -> None:
    bad = make_zip({"plug.py": "raise ValueError('boom at import')\n"}, manifest("bad", "plug:P"))
    with pytest.raises(PluginLoadError, match="boom at import"):
        load(loader, tmp_path, bad)
    assert not [n for n in sys.modules if "bad_1_0_0" in n]
    wrong = make_zip({"plug.py": "class P: pass\n"}, manifest("wrong", "plug:P"))
    with pytest.raises(PluginLoadError, match="not a subclass"):
        load(loader, tmp_path, wrong)
    with pytest.raises(PluginLoadError, match="unknown isolation"):
        info = inspect_package(package("1.0"))
        loader.load("demo", info, tmp_path / "x.zip", isolation="thread")


def test_time_to_load_a_package(loader: PackageLoader, tmp_path: Path) -> None:
    data = package("1.0")
    info = inspect_package(data)
    path = tmp_path / "p.zip"
    path.write_bytes(data)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        loaded = loader.load("demo", info, path)
        where(loaded)
        timings.append(time.perf_counter() - started)
        loader.unload(loaded)
    timings.sort()
    median_ms = timings[len(timings) // 2] * 1000
    print(f"\n[figures] time to load a 5-module package (namespace): median {median_ms:.2f} ms")
    # A figure, not a check: a bound on it would measure the machine's load (speed is
    # `make bench`'s job). What must hold is that each load is undone:
