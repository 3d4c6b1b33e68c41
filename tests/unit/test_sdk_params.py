"""Plugin params: DolphinScheduler form JSON, validation of string params, typed config."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from listener_common import ListenerPlugin, ParamValidationError, params
from listener_common.errors import ListenerError


class Everything(ListenerPlugin):
    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input("logFile", title="Log file", required=True, info="where"),
            params.InputNumber("retries", title="Retries", min=0, max=10, value=3),
            params.InputNumber("ratio", title="Ratio", min=0.5),
            params.Switch("fsync", title="Sync"),
            params.Radio("level", title="Level", options=["info", "warn"], value="info"),
            params.Select("color", title="Color", options=[("Red", "r"), ("Green", "g")]),
            params.Checkbox(
                "types", title="Types", options=["TASK_FAIL", "TASK_END", 7], value=["TASK_FAIL"]
            ),
            params.Textarea("template", title="Template"),
            params.Password("token", title="Token", required=True, message="a token is needed"),
        ]


FORM = params.form_json(Everything)
# The API server only has the stored JSON: validate from a JSON round trip, as it would.
STORED: list[dict[str, Any]] = json.loads(json.dumps(FORM))
GOOD = {"logFile": "/tmp/x.log", "token": "s3cret"}


def violations(values: dict[str, str]) -> list[tuple[str, str]]:
    with pytest.raises(ParamValidationError) as caught:
        params.validate_params(STORED, values)
    return caught.value.violations


# -- form JSON ---------------------------------------------------------------------------------


def test_input_form_is_dolphinscheduler_shaped() -> None:
    assert FORM[0] == {
        "field": "logFile",
        "name": "Log file",
        "type": "input",
        "title": "Log file",
        "value": None,
        "validate": {"required": True, "type": "string", "message": "", "trigger": "blur"},
        "props": None,
        "info": "where",
    }


def test_form_types_and_extras() -> None:
    by_field = {entry["field"]: entry for entry in FORM}
    assert [entry["type"] for entry in FORM] == [
        "input",
        "input-number",
        "input-number",
        "switch",
        "radio",
        "select",
        "checkbox",
        "textarea",
        "password",
    ]
    assert by_field["retries"]["validate"] == {
        "required": False,
        "type": "number",
        "min": 0,
        "max": 10,
        "message": "",
        "trigger": "blur",
    }
    assert "max" not in by_field["ratio"]["validate"]
    assert by_field["fsync"]["value"] is False
    assert by_field["fsync"]["validate"]["type"] == "boolean"
    assert by_field["color"]["options"] == [
        {"label": "Red", "value": "r", "disabled": False},
        {"label": "Green", "value": "g", "disabled": False},
    ]
    assert by_field["level"]["options"][0] == {"label": "info", "value": "info", "disabled": False}
    assert by_field["types"]["validate"]["type"] == "array"
    assert by_field["token"]["validate"]["message"] == "a token is needed"
    assert "options" not in by_field["logFile"]


def test_title_defaults_to_field_and_positional_title_works() -> None:
    assert params.Input("x").to_form()["title"] == "x"
    assert params.Input("x", "The X").to_form()["name"] == "The X"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: params.Input(""), "field name"),
        (lambda: params.Input("has space"), "field name"),
        (lambda: params.InputNumber("n", min=5, max=1), "min 5 > max 1"),
        (lambda: params.InputNumber("n", value="three"), "not a number"),
        (lambda: params.Switch("s", value="yes"), "not a bool"),
        (lambda: params.Radio("r"), "no options"),
        (lambda: params.Select("s", options=["a"], value="b"), "not an option"),
        (lambda: params.Checkbox("c", options=["a"], value=["a", "z"]), "'z' is not an option"),
    ],
)
def test_bad_declarations_fail_early(make: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        make()


def test_duplicate_fields_are_rejected() -> None:
    class Twice(ListenerPlugin):
        @classmethod
        def params(cls) -> list[params.PluginParam]:
            return [params.Input("a"), params.Switch("a")]

    with pytest.raises(ValueError, match="'a' is declared twice"):
        params.form_json(Twice)


def test_secret_fields_are_the_passwords() -> None:
    assert params.secret_fields(STORED) == {"token"}
    assert params.secret_fields([]) == set()


# -- validation --------------------------------------------------------------------------------


def test_valid_params_get_defaults_filled_in() -> None:
    assert params.validate_params(STORED, GOOD) == {
        "logFile": "/tmp/x.log",
        "token": "s3cret",
        "retries": "3",
        "fsync": "false",
        "level": "info",
        "types": '["TASK_FAIL"]',
    }


def test_given_values_are_kept_and_switches_normalized() -> None:
    given = {
        **GOOD,
        "retries": "10",
        "ratio": "0.5",
        "fsync": "TRUE",
        "level": "warn",
        "color": "g",
        "types": "TASK_END, 7",
        "template": "{{ x }}",
    }
    assert params.validate_params(STORED, given) == {**given, "fsync": "true"}


def test_optional_field_sent_empty_stays_empty() -> None:
    checked = params.validate_params(STORED, {**GOOD, "retries": "", "level": ""})
    assert checked["retries"] == "" and checked["level"] == ""


def test_checkbox_accepts_a_json_list() -> None:
    checked = params.validate_params(STORED, {**GOOD, "types": '["TASK_END", 7]'})
    assert checked["types"] == '["TASK_END", 7]'


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"token": "t"}, [("logFile", "is required")]),
        ({"logFile": "  ", "token": "t"}, [("logFile", "is required")]),
        ({**GOOD, "nope": "1"}, [("nope", "unknown field")]),
        ({**GOOD, "retries": "three"}, [("retries", "must be a number")]),
        ({**GOOD, "retries": "nan"}, [("retries", "must be a number")]),
        ({**GOOD, "retries": "-1"}, [("retries", "must be at least 0")]),
        ({**GOOD, "retries": "11"}, [("retries", "must be at most 10")]),
        ({**GOOD, "ratio": "0.25"}, [("ratio", "must be at least 0.5")]),
        ({**GOOD, "fsync": "yes"}, [("fsync", "must be true or false")]),
        ({**GOOD, "level": "debug"}, [("level", "must be one of info, warn")]),
        ({**GOOD, "color": "Red"}, [("color", "must be one of r, g")]),
        (
            {**GOOD, "types": "TASK_FAIL,TASK_BOOM"},
            [("types", "TASK_BOOM not among the options TASK_FAIL, TASK_END, 7")],
        ),
        (
            {**GOOD, "types": '["TASK_FAIL"'},
            [("types", "must be a JSON list or a comma-separated list of options")],
        ),
    ],
)
def test_each_violation_kind(values: dict[str, str], expected: list[tuple[str, str]]) -> None:
    assert violations(values) == expected


def test_every_violation_is_reported_at_once() -> None:
    found = violations({"retries": "99", "fsync": "maybe", "zzz": "", "aaa": "1"})
    assert found == [
        ("logFile", "is required"),
        ("retries", "must be at most 10"),
        ("fsync", "must be true or false"),
        ("token", "is required"),
        ("aaa", "unknown field"),
        ("zzz", "unknown field"),
    ]
    with pytest.raises(ParamValidationError) as caught:
        params.validate_params(STORED, {"retries": "99", "fsync": "maybe", "zzz": ""})
    message = str(caught.value)
    for field in ("logFile", "retries", "fsync", "token", "zzz"):
        assert field in message
    assert isinstance(caught.value, ListenerError)


def test_param_validation_error_survives_pickling() -> None:
    error = ParamValidationError([("a", "is required"), ("b", "unknown field")])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.violations == error.violations and str(copy) == str(error)
    assert str(error) == "invalid params: a: is required; b: unknown field"


# -- typed config ------------------------------------------------------------------------------


def test_typed_config_converts_per_field_type() -> None:
    config = params.typed_config(
        STORED,
        {**GOOD, "ratio": "2.5", "fsync": "true", "color": "g", "types": "TASK_END,7"},
    )
    assert config == {
        "logFile": "/tmp/x.log",
        "retries": 3,
        "ratio": 2.5,
        "fsync": True,
        "level": "info",
        "color": "g",
        "types": ["TASK_END", 7],
        "template": "",
        "token": "s3cret",
    }
    assert type(config["retries"]) is int and type(config["ratio"]) is float


def test_typed_config_unset_values() -> None:
    config = params.typed_config(STORED, {**GOOD, "retries": "", "types": ""})
    assert config["retries"] is None and config["ratio"] is None
    assert config["fsync"] is False and config["types"] == [] and config["color"] == ""


def test_typed_config_rejects_what_validation_rejects() -> None:
    with pytest.raises(ParamValidationError, match="retries"):
        params.typed_config(STORED, {**GOOD, "retries": "x"})
