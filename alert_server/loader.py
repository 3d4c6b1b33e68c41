"""Loads plugin packages into isolated import namespaces, the way a JVM gives each plugin
jar its own class loader, and unloads them without leaving anything behind.

Interface (all a caller needs)::

    loader = PackageLoader(process_settings)
    loaded = loader.load(plugin_id, info, zip_path, isolation="namespace")  # PluginLoadError
    loaded.plugin_class()          # a ListenerPlugin subclass: the package's, or a proxy
    residue = loader.unload(loaded)
    residue.find_leaks()           # [] once nothing of the package is alive any more

**Namespaces.** Every loaded package gets a module prefix of its own,
``_listener_plugins.<id>_<version>_<sha12>`` (the content hash makes two builds of one version
distinct), whose ``__path__`` is the package's zip file: the zip importer finds the package's
modules as ``<prefix>.<module>``, and nothing of the package is ever put on ``sys.path`` or
under a bare name in ``sys.modules``. Two packages that both bundle ``utils``, two versions of
one plugin, and the alert server's own ``utils`` therefore never meet. ``listener_common`` and
the standard library always come from the host (a package bundling a reserved name is
refused), so ``isinstance(obj, ListenerPlugin)`` holds for every version.

**Absolute imports of bundled libraries** (``import vlib.core``, ``from vlib import core``,
``import vlib.core as c``, at module level or in a function body, and ``__import__("vlib")``)
find the package's own copy: every module of the package runs with a ``__builtins__`` whose
``__import__`` rewrites absolute imports of the package's top-level names to the prefix; all
other imports (the standard library, ``listener_common``, the alert server's environment) pass
through unchanged.

**importlib (decision: redirect).** ``importlib.import_module`` does not go through
``__import__``; left alone, ``importlib.import_module("vlib.core")`` in a plugin would silently
get the host's ``vlib`` if the alert server happens to have one — two versions of a library
mixed without a word. So a package's modules that import ``importlib`` get a per-package view
of it whose ``import_module`` (and ``__import__``) apply the same rewrite; every other
attribute is the real ``importlib``'s. What is *not* redirected, and documented so in
``docs/plugins.md``: lookups by name that bypass both (``sys.modules["vlib"]``,
``importlib.util.find_spec("vlib")``, ``pkgutil``, ``importlib.resources.files("vlib")`` —
pass the module object or ``__package__`` instead), and host libraries importing by name on a
plugin's behalf.

The namespace machinery itself lives in ``listener_common._namespace`` (shared with
``listener_common.testing``, which must not import server code); this module adds process
isolation and unloading with leak reports.

**Process isolation.** ``isolation="process"`` does not import the package here at all: a
child process (``python -m alert_server.plugin_child``) loads it with this same loader, and
``plugin_class`` is a generated proxy whose methods talk to a child per plugin object
(``alert_server.process_plugin``).

**Unloading** drops the package's modules from ``sys.modules``, its zip from the importer
caches, its source lines from ``linecache``, its loggers, and the ``typing`` caches that could
hold its classes; it returns a :class:`Residue` holding only weak references to the
package's modules, classes and functions. Anything still alive after a garbage collection is a
leak — a thread or task still running the package's code, or a host object keeping one of its
objects — and :meth:`Residue.find_leaks` says which, so the host reports it instead of
silently keeping the old version in memory (DolphinScheduler's reload leak).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import types
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alert_server import process_plugin
from alert_server.child_process import ChildSpec, ProcessSettings
from listener_common import ListenerPlugin
from listener_common._namespace import ROOT, Namespaces, safe_name, under
from listener_common.errors import PluginLoadError
from listener_common.names import name_problem
from listener_common.package import RESERVED_NAMES, PackageInfo

__all__ = ["ROOT", "LoadedPackage", "PackageLoader", "PluginLoadError", "Residue"]

ISOLATIONS = ("namespace", "process")


@dataclass(eq=False)
class LoadedPackage:
    """One loaded version of a plugin: what delivery loops build their plugin objects from."""

    plugin_id: str
    info: PackageInfo
    zip_path: Path
    prefix: str
    plugin_class: type[ListenerPlugin]
    form: list[dict[str, Any]]
    modules: list[str] = field(default_factory=list)
    isolation: str = "namespace"

    @property
    def sha256(self) -> str:
        return self.info.sha256

    @property
    def version(self) -> str:
        return str(self.info.manifest.version)


def _code_name(code: types.CodeType, module: str) -> str:
    return f"{module}.{code.co_qualname}"


@dataclass(eq=False)
class Residue:
    """What may remain of an unloaded package: weak references only, never the objects.

    The host keeps one per unloaded version until :meth:`find_leaks` comes back empty.
    """

    plugin_id: str
    version: str
    sha256: str
    prefix: str
    zip_path: str
    refs: list[weakref.ref[Any]]
    #: Who holds the survivors, found once: each walk scans the heap, so re-checks reuse it.
    _holders: list[str] | None = field(default=None, repr=False)

    def survivors(self) -> list[Any]:
        """The tracked objects still alive (without collecting garbage first)."""
        return [obj for obj in (r() for r in self.refs) if obj is not None]

    def find_leaks(self, *, collect: bool = True) -> list[str]:
        """Collects garbage, then describes whatever of the package is still alive.

        Threads and asyncio tasks still running the package's code are named with the
        function they run; other survivors are traced back (a bounded walk over
        ``gc.get_referrers``, done once per residue) to the host module global that holds
        them. Empty: unloaded.
        """
        if collect:
            gc.collect()
        found = self._running_code()
        alive = self.survivors()
        if not alive:
            self._holders = None
        else:
            if self._holders is None:
                self._holders = _holders(alive[:3], self.prefix, ignore={id(alive)})
            holders = self._holders
            for holder in holders:
                if holder not in found:
                    found.append(holder)
            if not holders and not found:
                kinds = ", ".join(sorted({_describe_obj(o) for o in alive})[:5])
                found.append(f"{len(alive)} object(s) still alive after unload ({kinds})")
        return found

    def _running_code(self) -> list[str]:
        found: list[str] = []
        frames = sys._current_frames()
        for thread in threading.enumerate():
            where = ""
            frame = frames.get(thread.ident) if thread.ident is not None else None
            while frame is not None:
                module = frame.f_globals.get("__name__")
                if under(module, self.prefix):
                    where = _code_name(frame.f_code, str(module))
                    break
                frame = frame.f_back
            target = getattr(thread, "_target", None)
            if (
                not where
                and target is not None
                and under(getattr(target, "__module__", ""), self.prefix)
            ):
                where = f"{target.__module__}.{getattr(target, '__qualname__', '?')}"
            if not where and under(type(thread).__module__, self.prefix):
                where = f"{type(thread).__module__}.{type(thread).__qualname__}"
            if where:
                state = "daemon thread" if thread.daemon else "thread"
                found.append(f"{state} {thread.name!r} still runs {where}")
        try:
            tasks = asyncio.all_tasks()
        except RuntimeError:  # no running loop in this thread
            tasks = set()
        for task in tasks:
            coro = task.get_coro()
            frame = getattr(coro, "cr_frame", None)
            module = frame.f_globals.get("__name__") if frame is not None else None
            if frame is not None and under(module, self.prefix):
                found.append(
                    f"asyncio task {task.get_name()!r} still runs "
                    f"{_code_name(frame.f_code, str(module))}"
                )
        return found


def _describe_obj(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    qualname = getattr(obj, "__qualname__", None)
    return f"{type(obj).__name__} {qualname}" if isinstance(qualname, str) else type(obj).__name__


def _holders(
    targets: list[Any], prefix: str, *, ignore: set[int], max_nodes: int = 150
) -> list[str]:
    """Host module globals from which ``targets`` are reachable (a backward walk).

    Bounded, because ``gc.get_referrers`` scans the heap on every call; only run when
    something did survive, which is the exceptional case.
    """
    # The server froze its start-up heap (alert_server.app), which get_referrers does not
    # scan, and module globals are part of it: thaw it for good. Only a leak gets here,
    # and its next collections cost what they did before the freeze.
    gc.unfreeze()
    modules = {
        id(vars(m)): name
        for name, m in list(sys.modules.items())
        if m is not None and not under(name, prefix) and not under(name, ROOT)
    }
    found: list[str] = []
    queue: list[Any] = list(targets)
    seen = {id(t) for t in targets}
    walk_state = {id(queue), id(seen), id(found), id(targets), *ignore}
    nodes = 0
    while queue and nodes < max_nodes and len(found) < 3:
        obj = queue.pop(0)
        nodes += 1
        for ref in gc.get_referrers(obj):
            if id(ref) in seen or id(ref) in walk_state or isinstance(ref, types.FrameType):
                continue
            seen.add(id(ref))
            module = modules.get(id(ref))
            if module is not None:
                key = next((k for k, v in ref.items() if v is obj), "?")
                if module == "threading" and key in ("_active", "_limbo"):
                    continue  # a running thread: reported with the code it runs
                found.append(f"held by host module global {module}.{key} ({_describe_obj(obj)})")
                continue
            if isinstance(ref, dict) and under(ref.get("__name__"), prefix):
                continue  # the package's own globals: a cycle, not a holder
            queue.append(ref)
    return found


class PackageLoader:
    """Loads and unloads packages; thread-safe (loads run off the event loop)."""

    def __init__(self, process: ProcessSettings | None = None) -> None:
        self._namespaces = Namespaces()
        self._counter = 0
        self._process = process

    def close(self) -> None:
        """Unloads whatever is still loaded and removes the import hook."""
        self._namespaces.close()

    def load(
        self,
        plugin_id: str,
        info: PackageInfo,
        zip_path: Path,
        *,
        isolation: str | None = None,
        probe: bool = False,
    ) -> LoadedPackage:
        """Loads the package's entry class; raises PluginLoadError saying what is wrong.

        ``isolation`` defaults to the manifest's; an admin may override it either way.
        """
        manifest = info.manifest
        isolation = isolation or manifest.isolation
        if isolation not in ISOLATIONS:
            raise PluginLoadError(f"unknown isolation {isolation!r}; use namespace or process")
        problem = name_problem(plugin_id)
        if problem:  # the API server checks ids too; the loader does not rely on it
            raise PluginLoadError(problem)
        reserved = sorted(info.top_level_names & RESERVED_NAMES)
        if reserved:  # inspect_package refuses these too; the loader does not rely on it
            raise PluginLoadError(f"package bundles {', '.join(reserved)}: reserved for the host")
        with self._namespaces.lock:
            self._counter += 1
            # The same package may be loaded in both modes during a switch of isolation.
            tag = ("_proc" if isolation == "process" else "") + (
                f"_probe{self._counter}" if probe else ""
            )
            name = safe_name(f"{plugin_id}_{manifest.version}_{info.sha256[:12]}{tag}")
            prefix = f"{ROOT}.{name}"
            if prefix in self._namespaces:
                raise PluginLoadError(f"{plugin_id} {manifest.version} is already loaded")
            if isolation == "namespace":
                self._namespaces.add(name, zip_path, info.top_level_names)
        if isolation == "process":
            return self._load_process(plugin_id, info, zip_path, prefix)
        try:
            cls, form = self._namespaces.import_entry(prefix, manifest.entry)
        except BaseException:
            self._namespaces.forget(prefix, zip_path)
            raise
        return LoadedPackage(plugin_id, info, zip_path, prefix, cls, form)

    def _load_process(
        self, plugin_id: str, info: PackageInfo, zip_path: Path, prefix: str
    ) -> LoadedPackage:
        settings = self._process or ProcessSettings()
        form, batch = process_plugin.inspect_in_child(plugin_id, info.sha256, zip_path, settings)
        cls = process_plugin.proxy_class(
            ChildSpec(plugin_id, info.sha256, str(zip_path), prefix, settings),
            batch,
        )
        return LoadedPackage(plugin_id, info, zip_path, prefix, cls, form, isolation="process")

    def unload(self, loaded: LoadedPackage) -> Residue:
        """Forgets the package; returns weak references to what of it should now die."""
        refs: list[weakref.ref[Any]] = [weakref.ref(loaded.plugin_class)]
        with self._namespaces.lock:
            for name, module in list(sys.modules.items()):
                if not under(name, loaded.prefix) or module is None:
                    continue
                refs.append(weakref.ref(module))
                for value in list(vars(module).values()):
                    if isinstance(value, type | types.FunctionType) and under(
                        getattr(value, "__module__", None), loaded.prefix
                    ):
                        refs.append(weakref.ref(value))
            self._namespaces.forget(loaded.prefix, loaded.zip_path)
        return Residue(
            loaded.plugin_id,
            loaded.version,
            loaded.sha256,
            loaded.prefix,
            str(loaded.zip_path),
            refs,
        )

    def loaded_prefixes(self) -> list[str]:
        return self._namespaces.prefixes()
