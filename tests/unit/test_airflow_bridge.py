"""The Airflow bridge without Airflow: the mapping, the settings, and the listener's promise
never to raise into Airflow (tests/airflow/ runs it inside a real Airflow)."""

from __future__ import annotations

import enum
import re
import tomllib
from concurrent.futures import Future
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

from listener.v1 import event_pb2
from listener_client.airflow.listener import AirflowListener
from listener_client.airflow.mapping import task_event, workflow_event
from listener_client.airflow.settings import Settings
from tests.support.airflow_env import CLIENT_PACKAGES, CONSTRAINTS
from tests.support.servers import REPO


class State(str, enum.Enum):  # noqa: UP042 - Airflow's states are (str, Enum): str() is the name
    RUNNING = "running"
    SUCCESS = "success"
    UP_FOR_RETRY = "up_for_retry"
    MANUAL = "manual"


START = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
END = datetime(2026, 5, 1, 12, 3, 0, tzinfo=UTC)


def dag_run(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "id": 17,
        "dag_id": "nightly",
        "run_id": "manual__2026-05-01T12:00:00+00:00",
        "run_type": State.MANUAL,
        "state": State.RUNNING,
        "clear_number": 0,
        "start_date": START,
        "end_date": None,
        "dag": SimpleNamespace(owner="data-team"),
    }
    return SimpleNamespace(**{**base, **fields})


def task_instance(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "dag_id": "nightly",
        "run_id": "manual__2026-05-01T12:00:00+00:00",
        "task_id": "extract",
        "map_index": -1,
        "try_number": 1,
        "hostname": "worker-3",
        "state": State.RUNNING,
        "start_date": START,
        "end_date": None,
        "log_url": "http://airflow:8080/dags/nightly/runs/r/tasks/extract?try_number=1",
        "task": SimpleNamespace(owner="alice", task_type="BashOperator"),
    }
    return SimpleNamespace(**{**base, **fields})


def test_dag_run_running_is_a_workflow_start() -> None:
    event = workflow_event("running", dag_run(), host="sched-1", project_name="etl")
    assert event.WhichOneof("payload") == "workflow_start"
    run = event.workflow_start
    assert (run.workflow_name, run.workflow_instance_id, run.owner) == ("nightly", 17, "data-team")
    assert (run.command_type, run.state, run.run_times, run.host) == (
        "manual",
        "running",
        1,
        "sched-1",
    )
    assert run.project_name == "etl"
    assert run.start_time.ToDatetime(tzinfo=UTC) == START
    assert not run.HasField("end_time")
    assert event.event_time.ToDatetime(tzinfo=UTC) == START
    assert event.source == "airflow/nightly/manual__2026-05-01T12:00:00+00:00"


def test_dag_run_end_and_failure() -> None:
    ended = workflow_event("success", dag_run(state=State.SUCCESS, end_date=END, clear_number=2))
    assert ended.WhichOneof("payload") == "workflow_end"
    assert ended.workflow_end.run_times == 3  # cleared twice: the third attempt
    assert ended.workflow_end.end_time.ToDatetime(tzinfo=UTC) == END
    assert ended.event_time.ToDatetime(tzinfo=UTC) == END
    # A naive datetime is UTC, as Airflow stores them; a missing state takes the hook's.
    failed = workflow_event("failed", dag_run(state=None, end_date=END.replace(tzinfo=None)))
    assert failed.WhichOneof("payload") == "workflow_fail"
    assert failed.workflow_fail.state == "failed"
    assert failed.workflow_fail.end_time.ToDatetime(tzinfo=UTC) == END


def test_task_instance_events() -> None:
    started = task_event("running", task_instance(), project_name="etl", workflow_instance_id=17)
    run = started.task_start
    assert (run.workflow_name, run.task_name, run.task_type, run.owner) == (
        "nightly",
        "extract",
        "BashOperator",
        "alice",
    )
    assert (run.task_state, run.host, run.workflow_instance_id) == ("running", "worker-3", 17)
    assert run.log_path.endswith("tasks/extract?try_number=1")
    assert started.source == "airflow/nightly/manual__2026-05-01T12:00:00+00:00/extract/1"
    assert not run.HasField("end_time")

    # Airflow calls the failure hook for a try it will retry: the state says so.
    retried = task_event(
        "failed", task_instance(state=State.UP_FOR_RETRY, end_date=END, try_number=2)
    )
    assert retried.WhichOneof("payload") == "task_fail"
    assert retried.task_fail.task_state == "up_for_retry"
    assert retried.task_fail.end_time.ToDatetime(tzinfo=UTC) == END
    assert retried.source.endswith("/extract/2")

    # The state not yet moved on (still queued) gives the hook's; a mapped task's index and a
    # run id with a slash stay readable and unambiguous.
    mapped = task_event("running", task_instance(state="queued", map_index=3, run_id="a/b"))
    assert mapped.task_start.task_state == "running"
    assert mapped.source == "airflow/nightly/a%2Fb/extract[3]/1"


def test_task_without_task_or_log_url_still_maps() -> None:
    class Broken(SimpleNamespace):
        @property
        def log_url(self) -> str:
            raise RuntimeError("no [api] base_url")

    ti = Broken(**{k: v for k, v in vars(task_instance()).items() if k != "log_url"})
    ti.task = None
    ti.operator = "PythonOperator"
    event = task_event("success", ti)
    assert event.task_end.log_path == ""
    assert event.task_end.task_type == "PythonOperator"
    assert event.task_end.owner == ""


class FakePublisher:
    def __init__(self, outcome: str = "ok") -> None:
        self.outcome = outcome
        self.events: list[event_pb2.ListenerEvent] = []
        self.closed = False

    def publish(self, event: event_pb2.ListenerEvent) -> Future[Any]:
        if self.outcome == "raise":
            raise RuntimeError("buffer full")
        self.events.append(event)
        future: Future[Any] = Future()
        if self.outcome == "ok":
            future.set_result(("id", len(self.events)))
        elif self.outcome == "error":
            future.set_exception(RuntimeError("UNAUTHENTICATED"))
        return future  # "hang": never acknowledged

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def airflow_hooks(listener: AirflowListener) -> Any:
    """A pluggy manager with Airflow's hookspec signatures (DAG run: dag_run, msg; task
    instance: previous_state, task_instance[, error]), as Airflow registers listeners."""
    spec = pluggy.HookspecMarker("airflow")

    class Specs:
        @spec
        def on_dag_run_running(self, dag_run: Any, msg: str) -> None: ...

        @spec
        def on_dag_run_success(self, dag_run: Any, msg: str) -> None: ...

        @spec
        def on_dag_run_failed(self, dag_run: Any, msg: str) -> None: ...

        @spec
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None: ...

        @spec
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None: ...

        @spec
        def on_task_instance_failed(
            self, previous_state: Any, task_instance: Any, error: Any
        ) -> None: ...

        @spec
        def before_stopping(self, component: Any) -> None: ...

    manager = pluggy.PluginManager("airflow")
    manager.add_hookspecs(Specs)
    manager.register(listener)
    return manager.hook


def test_hooks_publish_each_state_change_and_wait_for_it() -> None:
    fake = FakePublisher()
    listener = AirflowListener(Settings(targets=("127.0.0.1:1",)), lambda s: fake)
    hook = airflow_hooks(listener)
    hook.on_dag_run_running(dag_run=dag_run(), msg="started")
    hook.on_task_instance_running(previous_state="queued", task_instance=task_instance())
    hook.on_task_instance_failed(
        previous_state="running", task_instance=task_instance(), error=RuntimeError("x")
    )
    hook.on_task_instance_success(previous_state="running", task_instance=task_instance())
    hook.on_dag_run_success(dag_run=dag_run(state=State.SUCCESS, end_date=END), msg="success")
    hook.on_dag_run_failed(dag_run=dag_run(end_date=END), msg="task_failure")
    hook.before_stopping(component=object())
    assert [e.WhichOneof("payload") for e in fake.events] == [
        "workflow_start",
        "task_start",
        "task_fail",
        "task_end",
        "workflow_end",
        "workflow_fail",
    ]
    assert (listener.counters.published, listener.counters.failed) == (6, 0)
    assert listener.counters.unconfirmed == 0
    listener.close()
    assert fake.closed


@pytest.mark.parametrize("outcome", ["raise", "error"])
def test_hooks_never_raise_into_airflow(outcome: str, caplog: pytest.LogCaptureFixture) -> None:
    listener = AirflowListener(Settings(targets=("127.0.0.1:1",)), lambda s: FakePublisher(outcome))
    hook = airflow_hooks(listener)
    hook.on_task_instance_running(previous_state=None, task_instance=task_instance())
    hook.on_dag_run_failed(dag_run=dag_run(), msg="task_failure")
    assert (listener.counters.published, listener.counters.failed) == (0, 2)
    assert "2 failed so far" in caplog.text


class ManualPublisher(FakePublisher):
    """Acknowledges when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.futures: list[Future[Any]] = []

    def publish(self, event: event_pb2.ListenerEvent) -> Future[Any]:
        self.events.append(event)
        self.futures.append(Future())
        return self.futures[-1]


def test_an_outage_costs_airflow_one_ack_timeout(caplog: pytest.LogCaptureFixture) -> None:
    fake = ManualPublisher()
    listener = AirflowListener(Settings(targets=("h:1",), ack_timeout=0.05), lambda s: fake)
    hook = airflow_hooks(listener)
    hook.on_task_instance_running(previous_state=None, task_instance=task_instance())
    assert listener.counters.unconfirmed == 1
    assert caplog.text.count("not acknowledged within 0.05s") == 1
    # The first is still unacknowledged: the next ones are handed over without waiting
    # (a hanging wait would resolve nothing: these futures are never completed).
    hook.on_task_instance_success(previous_state=None, task_instance=task_instance())
    hook.on_dag_run_success(dag_run=dag_run(), msg="success")
    assert listener.counters.unconfirmed == 3
    assert caplog.text.count("not acknowledged") == 1
    assert len(fake.events) == 3  # all handed over, in order
    # The service is back: the stalled event is acknowledged, and hooks wait again.
    fake.futures[0].set_result(("id", 1))
    fake.futures[1].set_result(("id", 2))
    fake.futures[2].set_result(("id", 3))
    hook.on_dag_run_failed(dag_run=dag_run(), msg="task_failure")  # waits: times out again
    assert listener.counters.unconfirmed == 4
    assert caplog.text.count("not acknowledged") == 2
    fake.futures[3].set_result(("id", 4))
    acked: Future[Any] = Future()
    acked.set_result(("id", 5))
    fake.publish = lambda event: acked  # type: ignore[method-assign]
    hook.on_dag_run_running(dag_run=dag_run(), msg="started")
    assert (listener.counters.published, listener.counters.failed) == (1, 0)


def test_a_broken_object_or_factory_is_counted_not_raised() -> None:
    def factory(settings: Settings) -> FakePublisher:
        raise ValueError("tls_cert and tls_key go together")

    listener = AirflowListener(Settings(targets=("h:1",)), factory)
    listener.on_task_instance_running(task_instance=object())  # no dag_id at all
    listener.on_dag_run_running(dag_run=dag_run())
    assert listener.counters.failed == 2


def test_without_targets_nothing_is_published() -> None:
    created: list[Settings] = []
    listener = AirflowListener(Settings(), lambda s: created.append(s) or FakePublisher())
    listener.on_dag_run_running(dag_run=dag_run())
    assert created == [] and listener.counters == type(listener.counters)()


def test_a_forked_process_gets_its_own_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakePublisher] = []

    def factory(settings: Settings) -> FakePublisher:
        made.append(FakePublisher())
        return made[-1]

    listener = AirflowListener(Settings(targets=("h:1",)), factory)
    listener.on_dag_run_running(dag_run=dag_run())
    listener.on_dag_run_running(dag_run=dag_run())
    monkeypatch.setattr("os.getpid", lambda: 999_999)
    listener.on_dag_run_running(dag_run=dag_run())
    assert [len(p.events) for p in made] == [2, 1]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # No Airflow here: the AIRFLOW__LISTENER_SERVICE__* variables are read directly.
    monkeypatch.setenv("AIRFLOW__LISTENER_SERVICE__TARGETS", " api-1:50051, ,api-2:50051 ")
    monkeypatch.setenv("AIRFLOW__LISTENER_SERVICE__TOKEN", "t0k")
    monkeypatch.setenv("AIRFLOW__LISTENER_SERVICE__ACK_TIMEOUT", "2.5")
    monkeypatch.setenv("AIRFLOW__LISTENER_SERVICE__BUFFER_SIZE", "nonsense")
    settings = Settings.load()
    assert settings.targets == ("api-1:50051", "api-2:50051")
    assert (settings.token, settings.ack_timeout, settings.buffer_size) == ("t0k", 2.5, 10_000)


def test_constraints_pin_the_client_packages_as_pyproject_does() -> None:
    """The Airflow test's virtualenv must hold what listener_client was tested with."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(re.split(r"==", d.split(";")[0].strip(), maxsplit=1) for d in project)
    constraints = dict(
        line.split("==", 1)
        for line in CONSTRAINTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name in CLIENT_PACKAGES:
        assert constraints.get(name) == pins[name], name
