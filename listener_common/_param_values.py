"""Instance params checked and typed from a plugin's stored form JSON alone (the half of
:mod:`listener_common.params` the API server uses, which never runs plugin code).

:func:`validate_params`, :func:`typed_config` and :func:`parse_assignments` are public as
``listener_common.params.*``; this module is where they live.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from listener_common.errors import ParamValidationError

_INTEGER = re.compile(r"^[+-]?\d+$")


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
