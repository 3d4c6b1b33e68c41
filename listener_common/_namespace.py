"""Isolated import namespaces for plugin packages: the part of loading that needs no server.

The alert server's loader (``alert_server.loader``, which adds process isolation, unloading
with leak detection and the package cache) and ``listener_common.testing`` both load packages
through :class:`Namespaces`, so a plugin under test imports exactly as it will in production.

Every package gets a module prefix of its own, ``_listener_plugins.<name>``, whose ``__path__``
is the package's zip: the zip importer finds its modules as ``<prefix>.<module>``, nothing of it
goes on ``sys.path`` or under a bare name in ``sys.modules``, and its modules run with an
``__import__`` (and an ``importlib`` view) that sends absolute imports of the package's own
top-level names to the prefix. ``alert_server.loader``'s docstring tells the whole story.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import linecache
import logging
import re
import sys
import threading
import types
import typing
import zipimport
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from listener_common import params
from listener_common.errors import PluginLoadError
from listener_common.plugin import ListenerPlugin

__all__ = ["ROOT", "Namespaces", "under"]

ROOT = "_listener_plugins"


def safe_name(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", text)


def _own(name: str, top_level: frozenset[str]) -> bool:
    return name.partition(".")[0] in top_level


class _ImportlibView(types.ModuleType):
    """A package's view of ``importlib``: its own ``import_module``, the rest delegated."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib, name)


def _make_import(prefix: str, top_level: frozenset[str]) -> Callable[..., types.ModuleType]:
    """The package's ``__import__``; it hands out the package's ``importlib`` view too."""
    real_import = builtins.__import__
    view = _ImportlibView("importlib", "importlib, as seen by one plugin package")

    def _import(
        name: str,
        globals: dict[str, Any] | None = None,
        locals: dict[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        if level == 0 and _own(name, top_level):
            module = real_import(f"{prefix}.{name}", globals, locals, fromlist, 0)
            if fromlist:
                return module
            return sys.modules[f"{prefix}.{name.partition('.')[0]}"]
        if level == 0 and name.partition(".")[0] == "importlib":
            module = real_import(name, globals, locals, fromlist, 0)
            # ``from importlib.util import x`` wants the submodule; everything else binds or
            # reads attributes of the top-level name, which is the view.
            return module if fromlist and name != "importlib" else view
        return real_import(name, globals, locals, fromlist, level)

    def import_module(name: str, package: str | None = None) -> types.ModuleType:
        if not name.startswith(".") and _own(name, top_level):
            name = f"{prefix}.{name}"
        return importlib.import_module(name, package)

    view.import_module = import_module  # type: ignore[attr-defined]
    view.__import__ = _import  # type: ignore[attr-defined]
    return _import


class _NamespacedLoader(importlib.abc.Loader):
    """Wraps the zip importer's loader to run each module with the package's builtins."""

    def __init__(self, inner: Any, ns_builtins: dict[str, Any]) -> None:
        self._inner = inner
        self._builtins = ns_builtins

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__["__builtins__"] = self._builtins
        self._inner.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _PluginFinder(importlib.abc.MetaPathFinder):
    """Finds ``<prefix>.*`` modules in the prefix's zip; ignores every other name."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, Any]] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(ROOT + "."):
            return None
        parts = fullname.split(".")
        if len(parts) < 3:
            return None
        ns_builtins = self.namespaces.get(".".join(parts[:2]))
        if ns_builtins is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _NamespacedLoader(spec.loader, ns_builtins)
        return spec


def under(name: object, prefix: str) -> bool:
    return isinstance(name, str) and (name == prefix or name.startswith(prefix + "."))


class Namespaces:
    """The import hook and the registry of loaded packages' prefixes; thread-safe."""

    def __init__(self) -> None:
        self._finder = _PluginFinder()
        self.lock = threading.RLock()
        if ROOT not in sys.modules:
            root = types.ModuleType(ROOT, "Namespaces of loaded listener plugins.")
            root.__path__ = []
            sys.modules[ROOT] = root
        sys.meta_path.insert(0, self._finder)

    def __contains__(self, prefix: str) -> bool:
        return prefix in sys.modules or prefix in self._finder.namespaces

    def prefixes(self) -> list[str]:
        with self.lock:
            return list(self._finder.namespaces)

    def add(self, name: str, zip_path: Path, top_level: frozenset[str]) -> str:
        """Registers ``zip_path`` under ``_listener_plugins.<name>``; returns that prefix."""
        prefix = f"{ROOT}.{safe_name(name)}"
        with self.lock:
            if prefix in self:
                raise PluginLoadError(f"{prefix} is already loaded")
            package = types.ModuleType(prefix)
            package.__path__ = [str(zip_path)]
            package.__package__ = prefix
            ns_builtins = dict(builtins.__dict__)
            ns_builtins["__import__"] = _make_import(prefix, top_level)
            self._finder.namespaces[prefix] = ns_builtins
            sys.modules[prefix] = package
        return prefix

    @staticmethod
    def import_entry(prefix: str, entry: str) -> tuple[type[ListenerPlugin], list[dict[str, Any]]]:
        """Imports the manifest's entry class from a registered prefix, and its params form."""
        module_name, _, class_name = entry.partition(":")
        try:
            module = importlib.import_module(f"{prefix}.{module_name}")
        except Exception as exc:
            raise PluginLoadError(
                f"entry module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        cls: Any = module
        for part in class_name.split("."):
            cls = getattr(cls, part, None)
        if cls is None:
            raise PluginLoadError(f"entry {entry!r}: module {module_name!r} has no {class_name!r}")
        if not (isinstance(cls, type) and issubclass(cls, ListenerPlugin)):
            raise PluginLoadError(
                f"entry {entry!r} is not a subclass of listener_common.ListenerPlugin"
            )
        try:
            form = params.form_json(cls)
        except Exception as exc:
            raise PluginLoadError(
                f"{class_name}.params() failed: {type(exc).__name__}: {exc}"
            ) from exc
        return cls, form

    def forget(self, prefix: str, zip_path: Path) -> None:
        """Drops the package's modules, importer caches, source lines, loggers and the
        ``typing`` caches that could hold its classes."""
        with self.lock:
            self._finder.namespaces.pop(prefix, None)
            for name in [n for n in sys.modules if under(n, prefix)]:
                del sys.modules[name]
            root = sys.modules.get(ROOT)
            if root is not None:
                vars(root).pop(prefix.rpartition(".")[2], None)
            zip_text = str(zip_path)
            still_used = any(
                zip_text in getattr(sys.modules.get(p), "__path__", [])
                for p in self._finder.namespaces
            )
            if not still_used and zip_text:
                for key in [k for k in sys.path_importer_cache if k.startswith(zip_text)]:
                    del sys.path_importer_cache[key]
                zip_cache: dict[str, Any] = getattr(zipimport, "_zip_directory_cache", {})
                for key in [k for k in zip_cache if k.startswith(zip_text)]:
                    del zip_cache[key]
                for key in [k for k in linecache.cache if k.startswith(zip_text)]:
                    del linecache.cache[key]
            _forget_loggers(prefix)
            # typing memoises subscripted generics (``Optional[PluginClass]``) forever.
            for clear in getattr(typing, "_cleanups", ()):
                clear()
            importlib.invalidate_caches()

    def close(self) -> None:
        """Forgets whatever is still registered and removes the import hook."""
        with self.lock:
            for prefix in list(self._finder.namespaces):
                package = sys.modules.get(prefix)
                self.forget(prefix, Path(getattr(package, "__path__", [""])[0]))
            if self._finder in sys.meta_path:
                sys.meta_path.remove(self._finder)


def _forget_loggers(prefix: str) -> None:
    """Drops ``logging.getLogger(__name__)`` loggers of the package (with any handlers the
    plugin attached), including from the placeholders of their parent names, which would
    otherwise keep every version's loggers for good."""
    with logging._lock:  # type: ignore[attr-defined]  # the module's own registry lock
        loggers = logging.Logger.manager.loggerDict
        gone = {id(loggers.pop(k)) for k in [k for k in loggers if under(k, prefix)]}
        for key, item in list(loggers.items()):
            if isinstance(item, logging.PlaceHolder):
                for child in [c for c in item.loggerMap if id(c) in gone]:
                    del item.loggerMap[child]
                if not item.loggerMap and under(key, ROOT):
                    del loggers[key]
