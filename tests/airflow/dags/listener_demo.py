"""Small DAGs for the Airflow bridge test: one that succeeds and one whose last task fails
(run with ``airflow dags test``), and one the scheduler starts by itself. Airflow loads this
file, not pytest."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="bridge_ok", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def bridge_ok() -> None:
    @task(owner="etl-team")
    def extract() -> int:
        return 42

    @task(owner="etl-team")
    def load(value: int) -> None:
        assert value == 42

    load(extract())


@dag(dag_id="bridge_fail", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def bridge_fail() -> None:
    @task(owner="etl-team")
    def extract() -> int:
        return 1

    @task(owner="etl-team", retries=0)
    def explode(value: int) -> None:
        raise RuntimeError(f"boom {value}")

    explode(extract())


bridge_ok()
bridge_fail()


@dag(
    dag_id="bridge_scheduled",
    schedule="@once",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
)
def bridge_scheduled() -> None:
    # The pool has no slots: the scheduler creates and starts the run (on_dag_run_running)
    # and never queues the task, so no executor or API server is needed.
    @task(owner="etl-team", pool="bridge_closed")
    def wait() -> None:
        pass

    wait()


bridge_scheduled()
