"""The OpenAPI document: valid OpenAPI 3.1, as fresh as the protos, and true to the JSON the
gateway really sends (each answer validates against its schema)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
from openapi_spec_validator import validate

from api_server.http import openapi_gen
from api_server.http.gateway import OPENAPI_FILE
from tests.http.support import Http, http_pair
from tests.support.samples import logger_package


def _document() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(OPENAPI_FILE.read_text())
    return result


def test_the_document_is_valid_openapi_3_1() -> None:
    document = _document()
    validate(document)
    assert document["openapi"] == "3.1.0"
    status = document["components"]["schemas"]["google.rpc.Status"]
    assert set(status["properties"]) == {"code", "message", "details"}


def test_the_committed_document_is_fresh() -> None:
    assert openapi_gen.render() == OPENAPI_FILE.read_text(), "run make openapi"


def _check(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    responses = document["paths"][path][method]["responses"]
    schema = responses["200" if status == 200 else "default"]["content"]["application/json"]
    validator = jsonschema.Draft202012Validator(
        {**schema["schema"], "components": document["components"]}
    )
    errors = [e.message for e in validator.iter_errors(body)]
    assert not errors, (path, method, errors, body)


async def test_answers_match_their_schemas(tmp_path: Path) -> None:
    document = _document()
    async with http_pair(tmp_path) as (_, http):
        package = base64.b64encode(logger_package()).decode()

        async def check(method: str, path: str, template: str, body: Any = None) -> Any:
            reply = await Http.call(http, method.upper(), path, body)
            _check(document, template, method, reply.status, reply.json)
            return reply

        await check("post", "/v1/plugins", "/v1/plugins", {"package": package})
        await check("get", "/v1/plugins/logger", "/v1/plugins/{pluginId}")
        await check("get", "/v1/plugins", "/v1/plugins")
        await check(
            "post",
            "/v1/listenerInstances?listenerInstanceId=one",
            "/v1/listenerInstances",
            {
                "plugin": "plugins/logger",
                "params": {"logFile": str(tmp_path / "x")},
                "eventTypes": ["TASK_FAIL"],
            },
        )
        await check(
            "post",
            "/v1/events:publish",
            "/v1/events:publish",
            {"event": {"taskFail": {"taskName": "t"}}},
        )
        await check("get", "/v1/events", "/v1/events")
        instance = "/v1/listenerInstances/{listenerInstanceId}"
        await check("get", "/v1/listenerInstances/one", instance)
        await check("get", "/v1/listenerInstances/one/parkedEvents", instance + "/parkedEvents")
        await check(
            "post",
            "/v1/listenerInstances/one:sendTestEvent",
            instance + ":sendTestEvent",
            {"eventType": "TASK_FAIL"},
        )
        error = await check("get", "/v1/plugins/nope", "/v1/plugins/{pluginId}")
        assert error.status == 404
        invalid = await check(
            "post",
            "/v1/listenerInstances?listenerInstanceId=two",
            "/v1/listenerInstances",
            {"plugin": "plugins/logger", "params": {"colour": "x"}, "eventTypes": ["TASK_FAIL"]},
        )
        assert invalid.status == 400 and invalid.violations()
