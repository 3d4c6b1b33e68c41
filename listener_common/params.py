"""Plugin parameters as a DolphinScheduler-compatible form.

A plugin declares its parameters with the classes below; :func:`form_json` turns them into the
form JSON DolphinScheduler's UI renders (``{field, name, type, title, value, validate, props,
info, options}``). The API server stores that JSON and validates instance params against it
with :func:`validate_params` alone, so validation never needs the plugin's code. Instance params
travel as strings (``map<string, string>``); :func:`typed_config` converts them to the Python
values a plugin's ``open(config)`` receives.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Protocol

from listener_common._param_values import (
    _to_text,
    parse_assignments,
    typed_config,
    validate_params,
)

__all__ = [
    "Checkbox",
    "Input",
    "InputNumber",
    "Password",
    "PluginParam",
    "Radio",
    "Select",
    "Switch",
    "Textarea",
    "form_json",
    "parse_assignments",
    "secret_fields",
    "typed_config",
    "validate_params",
]

#: An option as given by a plugin: a bare value (its own label) or ``(label, value)``.
Option = Any

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


@dataclass
class PluginParam:
    """One form field; ``field`` is the params key, ``title`` the label shown to admins.

    ``value`` is the default, used when an optional field is left out. ``secret`` marks a field
    that is not a password box but carries a credential all the same (a URL with a token in it,
    an ``Authorization`` header): the servers treat it like a password field — encrypted at
    rest, masked in every response, never logged.
    """

    form_type: ClassVar[str] = "input"
    validate_type: ClassVar[str] = "string"

    field: str
    title: str = ""
    _: KW_ONLY
    required: bool = False
    value: Any = None
    info: str = ""
    props: dict[str, Any] | None = None
    message: str = ""
    secret: bool = False

    def __post_init__(self) -> None:
        if not _FIELD_NAME.match(self.field):
            raise ValueError(f"param field {self.field!r} is not a valid field name")
        if not self.title:
            self.title = self.field

    def _validate_rule(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "type": self.validate_type,
            "message": self.message,
            "trigger": "blur",
        }

    def to_form(self) -> dict[str, Any]:
        """This field as DolphinScheduler form JSON (plus ``"secret": true`` on a secret field
        that is not a password box)."""
        form = {
            "field": self.field,
            "name": self.title,
            "type": self.form_type,
            "title": self.title,
            "value": self.value,
            "validate": self._validate_rule(),
            "props": self.props,
            "info": self.info,
        }
        if self.secret and self.form_type != "password":
            form["secret"] = True
        return form


@dataclass
class Input(PluginParam):
    """A one-line text box."""


@dataclass
class Textarea(PluginParam):
    """A multi-line text box."""

    form_type = "textarea"


@dataclass
class Password(PluginParam):
    """A secret: masked in every API response and log line, stored as given."""

    form_type = "password"


@dataclass
class InputNumber(PluginParam):
    """A number, optionally bounded; it reaches the plugin as an int, or a float if it has a
    fractional part."""

    form_type = "input-number"
    validate_type = "number"

    _: KW_ONLY
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"param {self.field!r}: min {self.min} > max {self.max}")
        if self.value is not None and not isinstance(self.value, int | float):
            raise ValueError(f"param {self.field!r}: default {self.value!r} is not a number")

    def _validate_rule(self) -> dict[str, Any]:
        rule = super()._validate_rule()
        if self.min is not None:
            rule["min"] = self.min
        if self.max is not None:
            rule["max"] = self.max
        return rule


@dataclass
class Switch(PluginParam):
    """An on/off toggle; it reaches the plugin as a bool (default False)."""

    form_type = "switch"
    validate_type = "boolean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value is None:
            self.value = False
        if not isinstance(self.value, bool):
            raise ValueError(f"param {self.field!r}: default {self.value!r} is not a bool")


@dataclass
class _Choice(PluginParam):
    """Shared by the option fields: ``options`` are values or ``(label, value)`` pairs."""

    _: KW_ONLY
    options: list[Option] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.options:
            raise ValueError(f"param {self.field!r}: no options")
        defaults = self.value if isinstance(self.value, list) else [self.value]
        known = {_to_text(value) for _, value in self._pairs()}
        for default in defaults:
            if default is not None and _to_text(default) not in known:
                raise ValueError(f"param {self.field!r}: default {default!r} is not an option")

    def _pairs(self) -> list[tuple[str, Any]]:
        return [
            (str(o[0]), o[1]) if isinstance(o, tuple) else (_to_text(o), o) for o in self.options
        ]

    def to_form(self) -> dict[str, Any]:
        form = super().to_form()
        form["options"] = [
            {"label": label, "value": value, "disabled": False} for label, value in self._pairs()
        ]
        return form


@dataclass
class Radio(_Choice):
    """Exactly one of the options, as radio buttons."""

    form_type = "radio"


@dataclass
class Select(_Choice):
    """Exactly one of the options, as a drop-down."""

    form_type = "select"


@dataclass
class Checkbox(_Choice):
    """Any subset of the options; it reaches the plugin as a list of option values."""

    form_type = "checkbox"
    validate_type = "array"


class DeclaresParams(Protocol):
    """What :func:`form_json` needs of a plugin class (``ListenerPlugin`` is one): its params.

    A protocol rather than ``type[ListenerPlugin]`` so this module does not import ``plugin``,
    which imports it."""

    def params(self) -> Sequence[PluginParam]: ...


def form_json(plugin_cls: DeclaresParams) -> list[dict[str, Any]]:
    """The plugin's form; raises ValueError if two params share a field name."""
    form = [param.to_form() for param in plugin_cls.params()]
    seen: set[str] = set()
    for entry in form:
        if entry["field"] in seen:
            raise ValueError(f"param field {entry['field']!r} is declared twice")
        seen.add(entry["field"])
    return form


def secret_fields(form: Iterable[Mapping[str, Any]]) -> set[str]:
    """Fields whose values must never be shown: password fields and fields marked secret."""
    return {
        str(entry["field"])
        for entry in form
        if entry.get("type") == "password" or entry.get("secret") is True
    }
