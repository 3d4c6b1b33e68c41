"""The SDK helpers plugins share: error text and event-field templates."""

from __future__ import annotations

import pytest

from listener_common.errors import error_text
from listener_common.templates import TEMPLATE_FIELDS, check_template, render_template


class KafkaTimeoutError(Exception):
    pass


def test_error_text() -> None:
    assert error_text(ValueError("boom")) == "ValueError: boom"
    assert error_text(ValueError()) == "ValueError"
    # A message that names its type already is not prefixed twice (aiokafka's errors).
    assert error_text(KafkaTimeoutError("KafkaTimeoutError: no broker")) == (
        "KafkaTimeoutError: no broker"
    )


def test_render_template_tokens_and_missing_fields() -> None:
    data = {"type": "TASK_FAIL", "project_name": "etl.daily", "workflow_name": "a b", "host": ""}
    assert render_template("x.{type}.{project_name}", data, ".") == "x.task_fail.etl_daily"
    assert render_template("{workflow_name}/{host}/{task_name}", data, " ") == "a_b/_/_"
    assert render_template("{project_name}", data) == "etl.daily"  # nothing unsafe


def test_check_template() -> None:
    assert {"type", "project_name", "sequence"} <= TEMPLATE_FIELDS
    assert check_template("x.{type}.{task_name}", "subject", ".") == "x._._"
    with pytest.raises(
        ValueError, match=r"^subject template .* names unknown field \{projectname\}"
    ):
        check_template("x.{projectname}", "subject")
    with pytest.raises(ValueError, match=r"^routingKey template"):
        check_template("x.{type", "routingKey")
    with pytest.raises(ValueError, match=r"^routingKey template"):
        check_template("x.{sequence:05d}", "routingKey")
