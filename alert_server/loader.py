"""Loads plugin packages into isolated import namespaces, the way a JVM gives each plugin
jar its own class loader.

Every loaded package gets a module prefix of its own, ``_listener_plugins.<id>_<version>_<sha>``,
whose ``__path__`` is the package's zip file: Python's zip importer then finds the package's
modules as ``<prefix>.<module>``, and nothing of the package is ever put on ``sys.path``.

Bundled libraries import each other absolutely (``import vlib.core``). So that those imports
find the package's own copy, every module of the package runs with a ``__builtins__`` whose
``__import__`` rewrites absolute imports of the package's top-level names to the prefix; all
other imports (the standard library, ``listener_common``, the alert server's environment) go
through unchanged. ``importlib.import_module`` does not pass through ``__import__`` and is not
redirected: a plugin that imports its own modules that way must use a relative name
(``importlib.import_module(".mod", __package__)``).
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import threading
import types
import zipimport
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from listener_common import ListenerPlugin, params
from listener_common.errors import PackageError
from listener_common.package import PackageInfo

ROOT = "_listener_plugins"


class PluginLoadError(PackageError):
    """The package is well formed but its code does not load (the message says why)."""


@dataclass(eq=False)
class LoadedPackage:
    plugin_id: str
    info: PackageInfo
    zip_path: Path
    prefix: str
    plugin_class: type[ListenerPlugin]
    form: list[dict[str, Any]]
    modules: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return self.info.sha256

    @property
    def version(self) -> str:
        return str(self.info.manifest.version)


def _safe(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", text)


def _make_import(prefix: str, top_level: frozenset[str]) -> Callable[..., types.ModuleType]:
    real_import = builtins.__import__

    def _import(
        name: str,
        globals: dict[str, Any] | None = None,
        locals: dict[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        if level == 0 and name.partition(".")[0] in top_level:
            module = real_import(f"{prefix}.{name}", globals, locals, fromlist, 0)
            if fromlist:
                return module
            return sys.modules[f"{prefix}.{name.partition('.')[0]}"]
        return real_import(name, globals, locals, fromlist, level)

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


class PackageLoader:
    """Loads and unloads packages; thread-safe (loads run off the event loop)."""

    def __init__(self) -> None:
        self._finder = _PluginFinder()
        self._lock = threading.RLock()
        self._counter = 0
        if ROOT not in sys.modules:
            root = types.ModuleType(ROOT, "Namespaces of loaded listener plugins.")
            root.__path__ = []
            sys.modules[ROOT] = root
        sys.meta_path.insert(0, self._finder)

    def close(self) -> None:
        """Unloads whatever is still loaded and removes the import hook."""
        with self._lock:
            for prefix in list(self._finder.namespaces):
                package = sys.modules.get(prefix)
                self._forget(prefix, Path(getattr(package, "__path__", [""])[0]))
            if self._finder in sys.meta_path:
                sys.meta_path.remove(self._finder)

    def load(
        self, plugin_id: str, info: PackageInfo, zip_path: Path, *, probe: bool = False
    ) -> LoadedPackage:
        """Imports the package's entry and checks its class; raises PluginLoadError."""
        manifest = info.manifest
        with self._lock:
            self._counter += 1
            tag = f"_probe{self._counter}" if probe else ""
            name = _safe(f"{plugin_id}_{manifest.version}_{info.sha256[:12]}{tag}")
            prefix = f"{ROOT}.{name}"
            if prefix in sys.modules:
                raise PluginLoadError(f"{plugin_id} {manifest.version} is already loaded")
            package = types.ModuleType(prefix)
            package.__path__ = [str(zip_path)]
            package.__package__ = prefix
            ns_builtins = dict(builtins.__dict__)
            ns_builtins["__import__"] = _make_import(prefix, info.top_level_names)
            self._finder.namespaces[prefix] = ns_builtins
            sys.modules[prefix] = package
        module_name, _, class_name = manifest.entry.partition(":")
        try:
            try:
                module = importlib.import_module(f"{prefix}.{module_name}")
            except Exception as exc:
                raise PluginLoadError(
                    f"entry module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            cls = getattr(module, class_name, None)
            if cls is None:
                raise PluginLoadError(
                    f"entry {manifest.entry!r}: module {module_name!r} has no {class_name!r}"
                )
            if not (isinstance(cls, type) and issubclass(cls, ListenerPlugin)):
                raise PluginLoadError(
                    f"entry {manifest.entry!r} is not a subclass of listener_common.ListenerPlugin"
                )
            try:
                form = params.form_json(cls)
            except Exception as exc:
                raise PluginLoadError(
                    f"{class_name}.params() failed: {type(exc).__name__}: {exc}"
                ) from exc
        except BaseException:
            self._forget(prefix, zip_path)
            raise
        return LoadedPackage(plugin_id, info, zip_path, prefix, cls, form)

    def unload(self, loaded: LoadedPackage) -> None:
        self._forget(loaded.prefix, loaded.zip_path)

    def _forget(self, prefix: str, zip_path: Path) -> None:
        with self._lock:
            self._finder.namespaces.pop(prefix, None)
            for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
                del sys.modules[name]
            still_used = any(
                str(zip_path) in getattr(sys.modules.get(p), "__path__", [])
                for p in self._finder.namespaces
            )
            if not still_used:
                for key in [k for k in sys.path_importer_cache if k.startswith(str(zip_path))]:
                    del sys.path_importer_cache[key]
                zip_cache: dict[str, Any] = getattr(zipimport, "_zip_directory_cache", {})
                for key in [k for k in zip_cache if k.startswith(str(zip_path))]:
                    del zip_cache[key]
            importlib.invalidate_caches()

    def loaded_prefixes(self) -> list[str]:
        with self._lock:
            return list(self._finder.namespaces)
