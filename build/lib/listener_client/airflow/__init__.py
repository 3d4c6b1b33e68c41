"""The Airflow bridge: an Airflow listener plugin that publishes DAG-run and task-instance
state changes to the listener service (docs/schedulers.md, "Airflow").

``mapping`` (Airflow objects → ListenerEvent) and ``settings`` import nothing from Airflow;
``listener`` needs pluggy; ``plugin`` needs Airflow and is loaded by Airflow alone, through
the ``airflow.plugins`` entry point.
"""
