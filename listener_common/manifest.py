"""The package manifest, ``listener-plugin.toml`` at the root of every plugin zip.

Example::

    name = "logger"                       # the plugin name rule: listener_common.names
    version = "1.0.0"                     # PEP 440
    entry = "logger_listener:LoggerListener"
    sdk = ">=1,<2"                        # SDK versions the plugin works with (default ">=1")
    isolation = "namespace"               # or "process"
    display_name = "Logger"               # optional
    description = "Writes events to a file"  # optional

Unknown keys are rejected: a misspelt optional key would otherwise be silently ignored.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any, Literal, cast

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from listener_common._version import __version__
from listener_common.errors import ManifestError
from listener_common.names import name_problem

__all__ = ["MANIFEST_NAME", "Manifest", "parse_manifest"]

MANIFEST_NAME = "listener-plugin.toml"

Isolation = Literal["namespace", "process"]

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_ENTRY = re.compile(rf"^({_DOTTED}):({_DOTTED})$")
_DEFAULT_SDK = SpecifierSet(">=1")
_KEYS = ("name", "version", "entry", "sdk", "isolation", "description", "display_name")


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A validated manifest; ``str(version)`` and ``str(sdk)`` give their normalized text."""

    name: str
    version: Version
    entry: str
    sdk: SpecifierSet = _DEFAULT_SDK
    isolation: Isolation = "namespace"
    description: str = ""
    display_name: str = ""

    @property
    def entry_module(self) -> str:
        """The dotted module part of ``entry``."""
        return self.entry.partition(":")[0]

    @property
    def entry_class(self) -> str:
        """The class (attribute path) part of ``entry``."""
        return self.entry.partition(":")[2]

    def sdk_compatible(self, sdk_version: str = __version__) -> bool:
        """Whether an SDK of ``sdk_version`` satisfies the plugin's ``sdk`` range."""
        return self.sdk.contains(sdk_version, prereleases=True)


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise ManifestError(f"{MANIFEST_NAME}: missing required key {key!r}")
    if not isinstance(value, str):
        raise ManifestError(
            f"{MANIFEST_NAME}: {key!r} must be a string, not {type(value).__name__}"
        )
    return value


def parse_manifest(data: bytes) -> Manifest:
    """Parses and validates manifest bytes; raises ManifestError naming the key at fault."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not UTF-8: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not valid TOML: {exc}") from exc
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ManifestError(
            f"{MANIFEST_NAME}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(_KEYS)}"
        )

    name = _text(raw, "name")
    problem = name_problem(name)
    if problem:
        raise ManifestError(f"{MANIFEST_NAME}: 'name' {problem}")
    version_text = _text(raw, "version")
    try:
        version = Version(version_text)
    except InvalidVersion as exc:
        raise ManifestError(
            f"{MANIFEST_NAME}: 'version' {version_text!r} is not a PEP 440 version"
        ) from exc
    entry = _text(raw, "entry")
    if not _ENTRY.match(entry):
        raise ManifestError(
            f"{MANIFEST_NAME}: 'entry' {entry!r} must look like 'module.path:ClassName'"
        )
    sdk_text = _text(raw, "sdk", ">=1")
    try:
        sdk = SpecifierSet(sdk_text)
    except InvalidSpecifier as exc:
        raise ManifestError(
            f"{MANIFEST_NAME}: 'sdk' {sdk_text!r} is not a version range such as '>=1,<2'"
        ) from exc
    isolation = _text(raw, "isolation", "namespace")
    if isolation not in ("namespace", "process"):
        raise ManifestError(
            f"{MANIFEST_NAME}: 'isolation' {isolation!r} must be 'namespace' or 'process'"
        )
    return Manifest(
        name=name,
        version=version,
        entry=entry,
        sdk=sdk,
        isolation=cast(Isolation, isolation),
        description=_text(raw, "description", ""),
        display_name=_text(raw, "display_name", ""),
    )
