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
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Protocol

from listener_common.errors import ParamValidationError

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
_INTEGER = re.compile(r"^[+-]?\d+$")


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


# -- validation (from stored form JSON only) ---------------------------------------------------


def _to_text(value: Any) -> str:
    """A form value as params carry it: bools as true/false, lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps([_to_text(v) for v in value])
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _options(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Option values by their text form, in form order."""
    values = [o.get("value") if isinstance(o, Mapping) else o for o in entry.get("options") or []]
    return {_to_text(value): value for value in values}


def _option_values(entry: Mapping[str, Any]) -> list[str]:
    return list(_options(entry))


def _bound(rule: Mapping[str, Any], key: str) -> float | None:
    try:
        return None if rule.get(key) is None else float(rule[key])
    except (TypeError, ValueError):
        return None  # a malformed stored bound is not the admin's fault


def _parse_number(text: str) -> int | float:
    if _INTEGER.match(text.strip()):
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return int(number) if number.is_integer() and "." not in text else number


def _parse_list(text: str) -> list[str]:
    """A checkbox value: a JSON list, or comma-separated values."""
    stripped = text.strip()
    if stripped.startswith("["):
        return [_to_text(item) for item in json.loads(stripped)]
    return [part.strip() for part in stripped.split(",") if part.strip()]


def _check(entry: Mapping[str, Any], text: str) -> tuple[str, str | None]:
    """Checks one non-empty value; returns the value to store and the violation, if any."""
    kind = entry.get("type")
    rule = entry.get("validate") or {}
    if kind == "input-number":
        try:
            number = _parse_number(text)
        except ValueError:
            return text, "must be a number"
        low, high = _bound(rule, "min"), _bound(rule, "max")
        if low is not None and number < low:
            return text, f"must be at least {_to_text(low)}"
        if high is not None and number > high:
            return text, f"must be at most {_to_text(high)}"
        return text.strip(), None
    if kind == "switch":
        flag = text.strip().lower()
        if flag not in ("true", "false"):
            return text, "must be true or false"
        return flag, None
    if kind in ("radio", "select"):
        allowed = _option_values(entry)
        if text not in allowed:
            return text, f"must be one of {', '.join(allowed)}"
        return text, None
    if kind == "checkbox":
        allowed = _option_values(entry)
        try:
            chosen = _parse_list(text)
        except ValueError:
            return text, "must be a JSON list or a comma-separated list of options"
        bad = [item for item in chosen if item not in allowed]
        if bad:
            return text, f"{', '.join(bad)} not among the options {', '.join(allowed)}"
        return text, None
    return text, None


def parse_assignments(items: Iterable[str], option: str = "--param") -> dict[str, str]:
    """``["k=v", ...]`` from a command line as a params map; ValueError names a bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def validate_params(form: Sequence[Mapping[str, Any]], values: Mapping[str, str]) -> dict[str, str]:
    """Checks instance params against a stored form; returns them with defaults filled in.

    Rejects unknown fields, missing or empty required fields, non-numbers and out-of-range
    numbers, switches that are not true/false, and choices that are not options. Raises
    ParamValidationError naming every violation, so one answer tells the admin all that is
    wrong. Absent optional fields get the form's default; an optional field sent empty stays
    empty (the admin cleared it).
    """
    known = {str(entry["field"]) for entry in form}
    violations: list[tuple[str, str]] = []
    result: dict[str, str] = {}
    for entry in form:
        name = str(entry["field"])
        raw = values.get(name)
        text = None if raw is None else raw if isinstance(raw, str) else _to_text(raw)
        required = bool((entry.get("validate") or {}).get("required", False))
        if text is None or not text.strip():
            if required:
                violations.append((name, "is required"))
            elif text is not None:
                result[name] = text
            elif entry.get("value") is not None:
                result[name] = _to_text(entry["value"])
            continue
        stored, problem = _check(entry, text)
        if problem:
            violations.append((name, problem))
        result[name] = stored
    violations.extend((name, "unknown field") for name in sorted(set(values) - known))
    if violations:
        raise ParamValidationError(violations)
    return result


def typed_config(form: Sequence[Mapping[str, Any]], values: Mapping[str, str]) -> dict[str, Any]:
    """Validated params as Python values: what a plugin's ``open(config)`` receives.

    Every form field is present: numbers are int or float (None if unset), switches bool,
    radio and select the chosen option's value, checkboxes the list of chosen option values
    (both with the types the plugin declared them with), everything else str.
    """
    checked = validate_params(form, values)
    config: dict[str, Any] = {}
    for entry in form:
        name = str(entry["field"])
        raw = checked.get(name, "")
        text = raw.strip()
        kind = entry.get("type")
        if kind == "input-number":
            config[name] = _parse_number(text) if text else None
        elif kind == "switch":
            config[name] = text.lower() == "true"
        elif kind == "checkbox":
            options = _options(entry)
            config[name] = [options.get(item, item) for item in _parse_list(text)] if text else []
        elif kind in ("radio", "select") and text:
            config[name] = _options(entry).get(raw, raw)
        else:
            config[name] = raw
    return config
