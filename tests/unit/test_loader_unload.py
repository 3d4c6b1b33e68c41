"""Unloading: nothing of a package stays behind, and a package that leaks on purpose is named.

A plugin can outlive its unload by starting a thread or task that keeps running its code, or
by handing one of its objects to a host module; the loader's ``Residue.find_leaks`` must say
which, so the host reports it instead of silently keeping the old version in memory.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import linecache
import sys
import threading
import weakref
import zipimport
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alert_server.loader import LoadedPackage, PackageLoader
from listener_common.package import inspect_package
from tests.support.samples import make_zip, manifest

CLEAN = """
import logging
from typing import Optional
import vlib
from listener_common import ListenerPlugin

class Marker:
    pass

SENTINEL = Marker()
log = logging.getLogger(__name__)

class P(ListenerPlugin):
    def fail(self):
        raise ValueError("with a traceback through plugin code")

HINT = Optional[P]  # typing memoises this, holding P, unless the loader clears its caches
"""

LEAKY = """
import asyncio, threading
import hostcache
from listener_common import ListenerPlugin

STOP = threading.Event()

def spin():
    while not STOP.wait(0.02):
        pass

async def forever():
    while not STOP.is_set():
        await asyncio.sleep(0.02)

class P(ListenerPlugin):
    def start_thread(self):
        threading.Thread(target=spin, name="leaky-spinner", daemon=True).start()
    def start_task(self):
        return asyncio.get_running_loop().create_task(forever(), name="leaky-task")
    def remember(self):
        hostcache.CACHE.append(self)
"""


def write(tmp_path: Path, data: bytes) -> tuple[Any, Path]:
    info = inspect_package(data)
    path = tmp_path / f"{info.sha256}.zip"
    path.write_bytes(data)
    return info, path


@pytest.fixture
def loader() -> Iterator[PackageLoader]:
    ldr = PackageLoader()
    yield ldr
    ldr.close()


@pytest.fixture
def hostcache(tmp_path: Path) -> Iterator[Any]:
    """A host module with a module-level cache, as a careless library would have."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "hostcache.py").write_text("CACHE = []\n")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        import hostcache  # type: ignore[import-not-found]

        yield hostcache
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("hostcache", None)


def test_unload_leaves_nothing_behind(loader: PackageLoader, tmp_path: Path) -> None:
    info, path = write(
        tmp_path,
        make_zip({"plug.py": CLEAN, "vlib/__init__.py": "X = 1\n"}, manifest("clean", "plug:P")),
    )
    loaded = loader.load("clean", info, path)
    prefix = loaded.prefix
    module = sys.modules[prefix + ".plug"]
    with pytest.raises(ValueError):  # puts the plugin's source into linecache
        try:
            loaded.plugin_class().fail()  # type: ignore[attr-defined]
        except ValueError as exc:
            import traceback

            traceback.format_exception(exc)
            raise
    assert any(k.startswith(str(path)) for k in linecache.cache)
    assert str(path) in sys.path_importer_cache
    refs = {
        "module": weakref.ref(module),
        "bundled module": weakref.ref(sys.modules[prefix + ".vlib"]),
        "plugin class": weakref.ref(loaded.plugin_class),
        "module global": weakref.ref(module.SENTINEL),
    }
    del module
    residue = loader.unload(loaded)
    del loaded
    gc.collect()
    assert not [n for n in sys.modules if n.startswith(prefix)]
    assert not [k for k in sys.path_importer_cache if k.startswith(str(path))]
    assert not [k for k in getattr(zipimport, "_zip_directory_cache", {}) if str(path) in k]
    assert not [k for k in linecache.cache if k.startswith(str(path))]
    assert prefix + ".plug" not in logging_names()
    assert {name: ref() is None for name, ref in refs.items()} == dict.fromkeys(refs, True)
    assert residue.find_leaks() == []
    assert prefix not in loader.loaded_prefixes()


def logging_names() -> list[str]:
    import logging

    return list(logging.Logger.manager.loggerDict)


def load_leaky(loader: PackageLoader, tmp_path: Path) -> LoadedPackage:
    info, path = write(tmp_path, make_zip({"plug.py": LEAKY}, manifest("leaky", "plug:P")))
    return loader.load("leaky", info, path)


def test_a_thread_left_running_is_named(
    loader: PackageLoader, tmp_path: Path, hostcache: Any
) -> None:
    loaded = load_leaky(loader, tmp_path)
    stop: threading.Event = sys.modules[loaded.prefix + ".plug"].STOP
    loaded.plugin_class().start_thread()  # type: ignore[attr-defined]
    residue = loader.unload(loaded)
    del loaded
    try:
        leaks = residue.find_leaks()
        assert any(
            "thread 'leaky-spinner' still runs" in leak and ".plug.spin" in leak for leak in leaks
        ), leaks
    finally:
        stop.set()
    thread = next(t for t in threading.enumerate() if t.name == "leaky-spinner")
    thread.join(5)
    del thread
    assert residue.find_leaks() == []


def test_an_object_kept_by_a_host_module_is_named(
    loader: PackageLoader, tmp_path: Path, hostcache: Any
) -> None:
    loaded = load_leaky(loader, tmp_path)
    loaded.plugin_class().remember()  # type: ignore[attr-defined]
    residue = loader.unload(loaded)
    del loaded
    leaks = residue.find_leaks()
    assert any("held by host module global hostcache.CACHE" in leak for leak in leaks), leaks
    hostcache.CACHE.clear()
    assert residue.find_leaks() == []


async def test_an_asyncio_task_left_running_is_named(
    loader: PackageLoader, tmp_path: Path, hostcache: Any
) -> None:
    loaded = load_leaky(loader, tmp_path)
    stop: threading.Event = sys.modules[loaded.prefix + ".plug"].STOP
    task = loaded.plugin_class().start_task()  # type: ignore[attr-defined]
    residue = loader.unload(loaded)
    del loaded
    leaks = residue.find_leaks()
    assert any("asyncio task 'leaky-task' still runs" in leak for leak in leaks), leaks
    stop.set()
    async with asyncio.timeout(5):
        await task
    del task
    assert residue.find_leaks() == []
