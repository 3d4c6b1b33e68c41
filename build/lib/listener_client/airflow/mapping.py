"""Airflow objects to ListenerEvent messages.

Pure functions over duck-typed objects: they read attributes by name and import nothing from
Airflow, so they run (and are tested) without it. A DAG run is Airflow's ``DagRun`` (the ORM
row the scheduler and ``airflow dags test`` hand the DAG-run hooks); a task instance is the
task SDK's ``RuntimeTaskInstance`` or the ORM ``TaskInstance`` (when the API server marks one),
which name the fields read here alike.

Airflow has no projects, definition codes or integer task-instance ids: those fields stay
unset (``project_name`` comes from the bridge's settings). The run id, task id, map index and
try number, which identify a run and a try in Airflow, have no typed field in the
DolphinScheduler-shaped payload, so they travel in ``source`` as ``airflow/<dag>/<run>`` or
``airflow/<dag>/<run>/<task>[<map index>]/<try>`` (each segment percent-quoted).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from listener.v1 import event_pb2

#: What the hook reported; the event type follows from it.
Phase = Literal["running", "success", "failed"]

_WORKFLOW_FIELD: dict[Phase, str] = {
    "running": "workflow_start",
    "success": "workflow_end",
    "failed": "workflow_fail",
}
_TASK_FIELD: dict[Phase, str] = {
    "running": "task_start",
    "success": "task_end",
    "failed": "task_fail",
}
_SAFE = ":+@=,-_.~"  # readable run ids such as manual__2026-01-01T00:00:00+00:00 stay readable


def _text(value: Any) -> str:
    """An enum's value (Airflow's states and run types are str enums), else ``str()``."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value: Any) -> datetime | None:
    """A timezone-aware datetime (naive ones are UTC, as Airflow stores them), else None."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _owner(obj: Any) -> str:
    """The task's owner, or the DAG's (Airflow joins its tasks' owners), when reachable."""
    for holder in (getattr(obj, "task", None), getattr(obj, "dag", None)):
        owner = getattr(holder, "owner", None) if holder is not None else None
        if isinstance(owner, str) and owner:
            return owner
    return ""


def _segment(value: Any) -> str:
    return quote(_text(value), safe=_SAFE)


def workflow_source(dag_run: Any) -> str:
    """``airflow/<dag id>/<run id>``: the DAG run's identity in Airflow."""
    return f"airflow/{_segment(dag_run.dag_id)}/{_segment(dag_run.run_id)}"


def task_source(ti: Any) -> str:
    """``airflow/<dag id>/<run id>/<task id>[<map index>]/<try number>``."""
    task = _segment(ti.task_id)
    map_index = getattr(ti, "map_index", -1)
    if isinstance(map_index, int) and map_index >= 0:
        task += f"[{map_index}]"
    tries = _int(getattr(ti, "try_number", 0))
    return f"airflow/{_segment(ti.dag_id)}/{_segment(ti.run_id)}/{task}/{tries}"


def _times(
    event: event_pb2.ListenerEvent,
    payload: event_pb2.WorkflowRun | event_pb2.TaskRun,
    phase: Phase,
    obj: Any,
) -> None:
    """``start_time``, ``end_time`` (not for a start: a retried task keeps its last try's end
    date until it runs again) and ``event_time``: when the state change happened in Airflow,
    the start or the end, else now."""
    start = _time(getattr(obj, "start_date", None))
    end = _time(getattr(obj, "end_date", None))
    if start is not None:
        payload.start_time.FromDatetime(start)
    if end is not None and phase != "running":
        payload.end_time.FromDatetime(end)
    when = start if phase == "running" else end
    event.event_time.FromDatetime(when or datetime.now(UTC))


def workflow_event(
    phase: Phase, dag_run: Any, *, host: str = "", project_name: str = ""
) -> event_pb2.ListenerEvent:
    """WORKFLOW_START / END / FAIL for a DAG run that became running / success / failed.

    ``run_times`` counts the run's attempts as DolphinScheduler does: one, plus the times the
    run was cleared (Airflow's ``clear_number``). ``host`` is the reporting process's host
    (the scheduler's): a DAG run itself runs nowhere in particular."""
    event = event_pb2.ListenerEvent(source=workflow_source(dag_run))
    payload: event_pb2.WorkflowRun = getattr(event, _WORKFLOW_FIELD[phase])
    payload.SetInParent()
    payload.project_name = project_name
    payload.owner = _owner(dag_run)
    payload.workflow_instance_id = _int(getattr(dag_run, "id", 0))
    payload.workflow_name = _text(dag_run.dag_id)
    payload.command_type = _text(getattr(dag_run, "run_type", ""))
    payload.state = _text(getattr(dag_run, "state", None)) or phase
    payload.run_times = 1 + _int(getattr(dag_run, "clear_number", 0))
    payload.host = host
    _times(event, payload, phase, dag_run)
    return event


def task_event(
    phase: Phase,
    ti: Any,
    *,
    project_name: str = "",
    workflow_instance_id: int = 0,
) -> event_pb2.ListenerEvent:
    """TASK_START / END / FAIL for a task instance that became running / success / failed.

    ``task_state`` is the instance's own state when it has one that fits the hook (Airflow
    calls the failure hook for a try that will be retried, with state ``up_for_retry``), else
    the hook's. ``log_path`` is the task's log page in the Airflow UI (``log_url``)."""
    event = event_pb2.ListenerEvent(source=task_source(ti))
    payload: event_pb2.TaskRun = getattr(event, _TASK_FIELD[phase])
    payload.SetInParent()
    payload.project_name = project_name
    payload.owner = _owner(ti)
    payload.workflow_instance_id = workflow_instance_id
    payload.workflow_name = _text(ti.dag_id)
    payload.task_name = _text(ti.task_id)
    task = getattr(ti, "task", None)
    payload.task_type = _text(
        getattr(task, "task_type", None) or getattr(ti, "operator", None) or ""
    )
    state = _text(getattr(ti, "state", None))
    payload.task_state = state if state and state not in ("queued", "scheduled") else phase
    payload.host = _text(getattr(ti, "hostname", ""))
    try:
        payload.log_path = _text(getattr(ti, "log_url", ""))
    except Exception:  # log_url reads Airflow's config; a broken config must not lose the event
        payload.log_path = ""
    _times(event, payload, phase, ti)
    return event
