"""The Airflow plugin that registers the listener; Airflow finds it through the
``airflow.plugins`` entry point of this package (see docs/schedulers.md). Importing it needs
Airflow, so nothing else in ``listener_client`` imports it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from listener_client.airflow.listener import AirflowListener

#: One listener per process: the scheduler's, or a task process's.
LISTENER = AirflowListener()


class ListenerServicePlugin(AirflowPlugin):
    """Publishes DAG-run and task-instance state changes to the listener service."""

    name = "listener_service"
    listeners = [LISTENER]
