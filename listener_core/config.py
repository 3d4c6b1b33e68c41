"""Configuration: defaults that just work, a TOML file, then ``LISTENER_*`` environment variables.

One ``Config`` serves both servers, so one file can describe a whole deployment. Every key can
be set in the file's top-level table, or from the environment as ``LISTENER_<KEY>`` (e.g.
``LISTENER_DB_URL``); the environment wins. Keys are flat (the README's table is the
contract); inside, they land in per-concern sections (``listener_core.settings``) that the
components take as they are.

Mistakes stop the server at start: an unknown key (a misspelt ``db_ulr`` would otherwise
leave the server quietly on SQLite), an unknown ``LISTENER_*`` variable, or a value the key
does not allow. The message names each key, its value, where it came from and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from listener_core.settings import (
    DeliverySettings,
    FleetSettings,
    LeaseSettings,
    LimitSettings,
    ListenSettings,
    LogSettings,
    PackageLimits,
    ProcessConfig,
    RetentionSettings,
    RuntimeSettings,
    SecuritySettings,
    SettingError,
    StoreSettings,
    TlsSettings,
    TraceSettings,
)

ENV_PREFIX = "LISTENER_"
# LISTENER_* variables the project's other tools read (listenerctl, make run, the compose
# file, the test suite): a shell that runs both may have them, and the servers ignore them.
# A new tool's variable goes here too (tests/unit/test_config.py checks the repository's).
OTHER_TOOLS_ENV = frozenset(
    {"LISTENER_SERVER", "LISTENER_TOKEN", "LISTENER_CONFIG", "LISTENER_ADMIN_TOKEN"}
    | {"LISTENER_DB_PASSWORD", "LISTENER_CONSOLE_SCREENSHOTS", "LISTENER_JAVA_OPTS"}
)
OTHER_TOOLS_ENV_PREFIXES = ("LISTENER_TEST_",)


@dataclass(frozen=True)
class Config:
    """Both servers' configuration, one section per concern."""

    store: StoreSettings = field(default_factory=StoreSettings)
    listen: ListenSettings = field(default_factory=ListenSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    packages: PackageLimits = field(default_factory=PackageLimits)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    leases: LeaseSettings = field(default_factory=LeaseSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    logging: LogSettings = field(default_factory=LogSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    tracing: TraceSettings = field(default_factory=TraceSettings)

    @property
    def alert_message_bytes(self) -> int:
        """Largest message between the API server and an alert server: a package travels
        inline to be checked (LoadPlugin), so at least max_package_bytes and some room."""
        return max(self.limits.max_message_bytes, self.packages.max_bytes + 2**20)

    @property
    def discovers_alert_servers(self) -> bool:
        """No static ``alert_targets``: the API server finds the alert servers in the store."""
        return not self.fleet.alert_targets

    @classmethod
    def from_keys(cls, **keys: Any) -> Config:
        """A config from keys alone (no file, no environment): for code and tests."""
        return load_config(env={}, **keys)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class _Target:
    section: str  # the Config field
    name: str  # the section's field
    kind: Any
    secret: bool


def _targets() -> dict[str, list[_Target]]:
    """Each key and the section fields it sets (handler_timeout sets two)."""
    keys: dict[str, list[_Target]] = {}
    for section in dataclasses.fields(Config):
        cls = get_type_hints(Config)[section.name]
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "key" in f.metadata:
                target = _Target(section.name, f.name, hints[f.name], f.metadata["secret"])
                keys.setdefault(f.metadata["key"], []).append(target)
    return keys


KEYS: dict[str, list[_Target]] = _targets()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_KIND = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    tuple[str, ...]: "a list of strings (comma separated in the environment)",
}


def _convert(key: str, kind: Any, raw: Any, text: bool) -> Any:
    """The value of ``raw`` as ``kind``: an environment variable's ``text`` is parsed; a TOML
    value must have the key's type already (``retry_base = "1"`` is a mistake)."""
    if key == "tokens" and isinstance(raw, Mapping):
        # {role = "token"} or {role = ["token", …]}: the same as "role:token" entries.
        raw = [
            f"{role}:{token}"
            for role, given in raw.items()
            for token in ([given] if isinstance(given, str) else list(given))
        ]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if text and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
    elif kind == tuple[str, ...]:
        items = raw.split(",") if text or isinstance(raw, str) else raw
        if isinstance(items, list | tuple) and all(isinstance(s, str) for s in items):
            return tuple(s.strip() for s in items if s.strip())
    elif kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if text:
            return int(raw.strip().replace("_", ""))
    elif kind is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if text:
            return float(raw.strip())
    elif kind is str and isinstance(raw, str):
        return raw.upper() if key == "log_level" else raw
    raise ValueError


class _Loader:
    """Collects every mistake of a config, so one start shows them all."""

    def __init__(self) -> None:
        # key -> (value, where it came from, the value as written there)
        self.values: dict[str, tuple[Any, str, Any]] = {}
        self.errors: list[str] = []

    def set(self, key: str, raw: Any, source: str, text: bool = False) -> None:
        if key not in KEYS:
            self.errors.append(f"unknown key {key!r} ({source}){_did_you_mean(key)}")
            return
        target = KEYS[key][0]
        try:
            self.values[key] = (_convert(key, target.kind, raw, text), source, raw)
        except (TypeError, ValueError):
            shown = "(hidden)" if target.secret else repr(raw)
            self.errors.append(
                f"{key} = {shown} ({source}): allowed: {_KIND.get(target.kind, target.kind)}"
            )

    def build(self) -> Config:
        sections: dict[str, dict[str, Any]] = {}
        for key, (value, _, _) in self.values.items():
            for target in KEYS[key]:
                sections.setdefault(target.section, {})[target.name] = value
        built: dict[str, Any] = {}
        hints = get_type_hints(Config)
        for name, values in sections.items():
            try:
                built[name] = hints[name](**values)
            except SettingError as exc:
                self._refused(exc, hints[name], values)
        if self.errors:
            raise ConfigError(
                "invalid configuration (README.md, Configuration, lists every key):\n  "
                + "\n  ".join(self.errors)
            )
        return Config(**built)

    def _refused(self, first: SettingError, cls: Any, values: dict[str, Any]) -> None:
        """Reports every refused field of a section, not only the first one raised."""
        reported: set[str] = set()
        for f in dataclasses.fields(cls):
            allowed = f.metadata.get("allowed")
            key = str(f.metadata.get("key"))
            if allowed is None or f.name not in values or key in reported:
                continue
            if not allowed.test(values[f.name]):
                reported.add(key)
                self.errors.append(self._message(SettingError(key, values[f.name], allowed.says)))
        if first.key not in reported:
            self.errors.append(self._message(first))

    def _message(self, exc: SettingError) -> str:
        target = KEYS[exc.key][0]
        _, source, raw = self.values.get(exc.key, (None, "default", exc.value))
        shown = "(hidden)" if target.secret else repr(raw)
        says = str(exc).split(": allowed: ", 1)[1]
        return f"{exc.key} = {shown} ({source}): allowed: {_KIND[target.kind]}, {says}"


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key.lower(), KEYS, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _env_keys(env: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    """(key, value, variable) of each ``LISTENER_*`` variable the servers read."""
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or raw == "":
            continue
        if name in OTHER_TOOLS_ENV or name.startswith(OTHER_TOOLS_ENV_PREFIXES):
            continue
        yield name[len(ENV_PREFIX) :].lower(), raw, name


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Builds the config from defaults, then the file, then the environment, then overrides
    (keys by name; None leaves a key as it is). Raises ConfigError naming every mistake."""
    env = os.environ if env is None else env
    loader = _Loader()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        for key, raw in data.items():
            loader.set(key, raw, f"file {path}")
    for key, raw, name in _env_keys(env):
        if key in KEYS:
            loader.set(key, raw, f"environment {name}", text=True)
        else:
            close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
            loader.errors.append(f"unknown environment variable {name}{hint}")
    for key, raw in overrides.items():
        if raw is not None:
            loader.set(key, raw, "argument")
    return loader.build()
