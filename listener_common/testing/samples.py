"""Sample events of all 13 types, with the field values a real DolphinScheduler sends.

``sample_event("TASK_FAIL")`` gives one event; keyword arguments replace fields
(``sample_event("TASK_FAIL", task_name="load")``). Ids look like the alert server's (UUIDv7
text) and sequences grow, so de-duplication and ordering code can be tested on them.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from listener_common.events import (
    EVENT_CLASSES,
    EventType,
    ListenerEvent,
    TaskDefinition,
    TaskRelation,
)

__all__ = ["sample_event", "sample_events"]

_T0 = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
_SEQUENCE = itertools.count(1)

_PROJECT_CODE = 13_586_271_249_216
_WORKFLOW_CODE = 13_586_289_870_400
_TASK_CODE = 13_586_301_117_888
_PROJECT: dict[str, Any] = {"project_code": _PROJECT_CODE, "project_name": "etl-nightly"}
_TASK_DEFINITION: dict[str, Any] = {
    "code": _TASK_CODE,
    "name": "load_orders",
    "version": 3,
    "description": "Copy yesterday's orders into the warehouse",
    "user": "alice",
    "task_type": "SHELL",
    "task_params": '{"rawScript":"python load_orders.py --day ${system.biz.date}"}',
    "flag": "YES",
    "task_priority": "MEDIUM",
    "worker_group": "default",
    "environment_code": -1,
    "fail_retry_times": 2,
    "fail_retry_interval": 1,
    "timeout_flag": "CLOSE",
    "timeout_notify_strategy": "WARN",
    "timeout": 0,
    "delay_time": 0,
}
_WORKFLOW_DEFINITION: dict[str, Any] = {
    "definition_id": 42,
    "code": _WORKFLOW_CODE,
    "name": "daily_orders",
    "version": 7,
    "release_state": "ONLINE",
    "description": "Orders ETL, every night at 02:00",
    "global_params": '[{"prop":"region","direct":"IN","type":"VARCHAR","value":"eu"}]',
    "user": "alice",
    "timeout": 120,
    "execution_type": "PARALLEL",
    "create_time": _T0 - timedelta(days=30),
    "update_time": _T0 - timedelta(minutes=5),
}
_WORKFLOW_RUN: dict[str, Any] = {
    "owner": "alice",
    "workflow_instance_id": 918_273,
    "workflow_definition_code": _WORKFLOW_DEFINITION["code"],
    "workflow_name": "daily_orders-7-20260314092653123",
    "command_type": "SCHEDULER",
    "run_times": 1,
    "recovery": False,
    "host": "10.0.3.17:5678",
}
_TASK_RUN: dict[str, Any] = {
    **{
        k: v for k, v in _WORKFLOW_RUN.items() if k not in ("command_type", "run_times", "recovery")
    },
    "task_instance_id": 7_364_512,
    "task_code": _TASK_DEFINITION["code"],
    "task_name": "load_orders",
    "task_type": "SHELL",
    "host": "10.0.4.23:1234",
    "log_path": "/opt/dolphinscheduler/logs/20260314/13586289870400/7/918273/7364512.log",
}


def _payload(event_type: EventType) -> dict[str, Any]:
    started, ended = _T0 - timedelta(minutes=3), _T0
    match event_type:
        case EventType.SERVER_DOWN:
            return {"server_type": "WORKER", "host": "10.0.4.23:1234", "event": "REMOVE"}
        case EventType.WORKFLOW_ADDED | EventType.WORKFLOW_UPDATE:
            return {
                **_WORKFLOW_DEFINITION,
                **_PROJECT,
                "task_definitions": [
                    TaskDefinition(
                        id=101,
                        project_code=_PROJECT_CODE,
                        create_time=_T0 - timedelta(days=30),
                        update_time=_T0 - timedelta(minutes=5),
                        **_TASK_DEFINITION,
                    )
                ],
                "task_relations": [
                    TaskRelation(
                        project_code=_PROJECT_CODE,
                        workflow_definition_code=_WORKFLOW_CODE,
                        workflow_definition_version=7,
                        pre_task_code=0,
                        pre_task_version=0,
                        post_task_code=_TASK_CODE,
                        post_task_version=3,
                        condition_type="NONE",
                        condition_params="{}",
                    )
                ],
            }
        case EventType.WORKFLOW_REMOVED:
            return {
                **_PROJECT,
                "owner": "alice",
                "workflow_definition_code": _WORKFLOW_DEFINITION["code"],
                "workflow_name": "daily_orders",
                "delete_time": _T0,
            }
        case EventType.WORKFLOW_START:
            return {
                **_PROJECT,
                **_WORKFLOW_RUN,
                "state": "RUNNING_EXECUTION",
                "start_time": started,
            }
        case EventType.WORKFLOW_END | EventType.WORKFLOW_FAIL:
            state = "SUCCESS" if event_type is EventType.WORKFLOW_END else "FAILURE"
            return {
                **_PROJECT,
                **_WORKFLOW_RUN,
                "state": state,
                "start_time": started,
                "end_time": ended,
            }
        case EventType.TASK_ADDED | EventType.TASK_UPDATE:
            return {
                **_PROJECT,
                **_TASK_DEFINITION,
                "definition_id": 101,
                "create_time": _T0 - timedelta(days=30),
                "update_time": _T0,
            }
        case EventType.TASK_REMOVED:
            return {
                **_PROJECT,
                "task_code": _TASK_DEFINITION["code"],
                "task_name": "load_orders",
                "task_type": "SHELL",
                "delete_time": _T0,
            }
        case EventType.TASK_START:
            return {
                **_PROJECT,
                **_TASK_RUN,
                "task_state": "RUNNING_EXECUTION",
                "start_time": started,
            }
        case EventType.TASK_END | EventType.TASK_FAIL:
            state = "SUCCESS" if event_type is EventType.TASK_END else "FAILURE"
            return {
                **_PROJECT,
                **_TASK_RUN,
                "task_state": state,
                "start_time": started,
                "end_time": ended,
            }
    raise ValueError(f"unknown event type {event_type!r}")  # pragma: no cover


def sample_event(event_type: EventType | str, **fields: Any) -> ListenerEvent:
    """One realistic event of ``event_type`` (``"TASK_FAIL"`` or ``EventType.TASK_FAIL``);
    ``fields`` replace any attribute, ``id`` and ``sequence`` included."""
    try:
        kind = EventType(str(event_type).removeprefix("EVENT_TYPE_"))
    except ValueError:
        known = ", ".join(t.value for t in EventType)
        raise ValueError(f"unknown event type {event_type!r}; one of: {known}") from None
    cls = EVENT_CLASSES[kind]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "sequence": next(_SEQUENCE),
        "event_time": _T0,
        "publish_time": _T0 + timedelta(milliseconds=12),
        "source": "master-1:5678",
        **_payload(kind),
        **fields,
    }
    return cls(**values)


def sample_events(*event_types: EventType | str) -> list[ListenerEvent]:
    """One sample of each given type, in order, with growing sequences (default: all 13)."""
    return [sample_event(t) for t in (event_types or tuple(EventType))]
