"""The Airflow listener: Airflow's DAG-run and task-instance hooks, published as events.

Airflow calls these hooks (pluggy, project name ``airflow``) in the scheduler or ``airflow
dags test`` process for DAG runs, and in the task's own process for task instances. Each hook
maps its object to a ListenerEvent and hands it to a thread-backed ``SyncPublisher``, then
waits up to ``ack_timeout`` seconds for the store's acknowledgement: a task process may exit
right after its hook returns, and an event acknowledged before the task goes on is ordered
before everything the task causes (the DAG run's end comes after its tasks' ends). During
an outage only the first hook waits (see ``_publish``). A hook never raises into Airflow: a
failure is logged and counted, and Airflow carries on.

Only pluggy (an Airflow dependency) is imported here, not Airflow, so the hooks are plain
methods that tests call without Airflow.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from pluggy import HookimplMarker

from listener.v1 import event_pb2
from listener_client.airflow.mapping import Phase, task_event, workflow_event
from listener_client.airflow.settings import Settings

log = logging.getLogger("listener_client.airflow")

#: Airflow's listener hooks are matched by pluggy's project name, so this marker is the one
#: ``airflow.listeners.hookimpl`` (core) and the task SDK's both are.
hookimpl = HookimplMarker("airflow")


class EventPublisher(Protocol):
    """What the listener needs of ``listener_client.SyncPublisher``."""

    def publish(self, event: event_pb2.ListenerEvent) -> Future[Any]: ...

    def flush(self, timeout: float | None = None) -> Any: ...

    def close(self, timeout: float | None = None) -> Any: ...


PublisherFactory = Callable[[Settings], EventPublisher]


def default_publisher(settings: Settings) -> EventPublisher:
    """A ``SyncPublisher`` to the configured API servers. It fails fast on a full buffer:
    a scheduler waits for the store at most ``ack_timeout``, never on a buffer."""
    from listener_client import SyncPublisher

    publisher: EventPublisher = SyncPublisher(
        list(settings.targets),
        token=settings.token or None,
        tls_ca=settings.tls_ca or None,
        tls_cert=settings.tls_cert or None,
        tls_key=settings.tls_key or None,
        buffer_size=settings.buffer_size,
        when_full="fail",
    )
    return publisher


@dataclass
class Counters:
    """What the listener did in this process. ``published``: acknowledged by the store before
    the hook returned. ``unconfirmed``: handed to the publisher, not acknowledged by then (it
    stays buffered and is sent while the process lives). ``failed``: not taken or refused (a
    mapping error, a full buffer, an error from the server)."""

    published: int = 0
    unconfirmed: int = 0
    failed: int = 0


class AirflowListener:
    """Registered by the ``listener_service`` Airflow plugin; one per process."""

    def __init__(
        self,
        settings: Settings | Callable[[], Settings] = Settings.load,
        publisher_factory: PublisherFactory = default_publisher,
    ) -> None:
        self._settings_source = settings
        self._factory = publisher_factory
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        self._publisher: EventPublisher | None = None
        self._pid = 0
        self._stalled: Future[Any] | None = None
        self.counters = Counters()

    # -- Airflow's hooks (signatures: Airflow's listener hookspecs; pluggy passes the
    #    arguments an implementation names, so each takes only what it reads) ---------------

    @hookimpl
    def on_dag_run_running(self, dag_run: Any) -> None:
        self._publish_workflow("running", dag_run)

    @hookimpl
    def on_dag_run_success(self, dag_run: Any) -> None:
        self._publish_workflow("success", dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any) -> None:
        self._publish_workflow("failed", dag_run)

    @hookimpl
    def on_task_instance_running(self, task_instance: Any) -> None:
        self._publish_task("running", task_instance)

    @hookimpl
    def on_task_instance_success(self, task_instance: Any) -> None:
        self._publish_task("success", task_instance)

    @hookimpl
    def on_task_instance_failed(self, task_instance: Any) -> None:
        self._publish_task("failed", task_instance)

    @hookimpl
    def before_stopping(self) -> None:
        """Airflow stops a job or a task process: send what may still be buffered."""
        publisher = self._publisher
        if publisher is None or self._pid != os.getpid():
            return
        try:
            settings = self._settings
            publisher.flush(timeout=settings.ack_timeout if settings else None)
        except Exception as exc:
            log.warning(
                "listener service: flush before stopping failed: %s",
                str(exc) or type(exc).__name__,
            )

    # -- publishing -----------------------------------------------------------------------

    def _publish_workflow(self, phase: Phase, dag_run: Any) -> None:
        self._publish(
            lambda s: workflow_event(
                phase, dag_run, host=s.host or _hostname(), project_name=s.project_name
            ),
            f"DAG run {getattr(dag_run, 'dag_id', '?')}/{getattr(dag_run, 'run_id', '?')}",
        )

    def _publish_task(self, phase: Phase, ti: Any) -> None:
        self._publish(
            lambda s: task_event(phase, ti, project_name=s.project_name),
            f"task {getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} "
            f"of {getattr(ti, 'run_id', '?')}",
        )

    def _publish(self, build: Callable[[Settings], event_pb2.ListenerEvent], what: str) -> None:
        """Maps, publishes and waits for the acknowledgement; logs and counts any failure.

        While an earlier event is still unacknowledged (the API servers are down or slow), a
        hook hands its event over without waiting: Airflow pays ``ack_timeout`` once per
        outage, not once per event, and the buffer keeps the order."""
        try:
            settings = self._current_settings()
            if not settings.targets:
                return
            event = build(settings)
            publisher = self._current_publisher(settings)
            future = publisher.publish(event)
            stalled = self._stalled
            if stalled is not None and not stalled.done():
                self.counters.unconfirmed += 1
                log.debug("listener service: event for %s buffered behind an earlier one", what)
                return
            try:
                future.result(timeout=settings.ack_timeout)
            except TimeoutError:
                self._stalled = future
                self.counters.unconfirmed += 1
                log.warning(
                    "listener service: event for %s not acknowledged within %gs; it stays"
                    " buffered, and later events do not wait until it is acknowledged",
                    what,
                    settings.ack_timeout,
                )
                return
        except Exception as exc:
            self.counters.failed += 1
            log.warning(
                "listener service: event for %s not published (%d failed so far): %s",
                what,
                self.counters.failed,
                str(exc) or type(exc).__name__,
            )
            return
        self._stalled = None
        self.counters.published += 1

    def _current_settings(self) -> Settings:
        with self._lock:
            if self._settings is None:
                source = self._settings_source
                self._settings = source if isinstance(source, Settings) else source()
                if not self._settings.targets:
                    log.warning(
                        "listener service: no targets configured ([listener_service] targets);"
                        " Airflow events are not published"
                    )
            return self._settings

    def _current_publisher(self, settings: Settings) -> EventPublisher:
        """This process's publisher. A forked child (Airflow forks workers) gets its own: the
        parent's channels and thread do not survive a fork."""
        with self._lock:
            pid = os.getpid()
            if self._publisher is None or self._pid != pid:
                self._publisher = self._factory(settings)
                self._pid = pid
                self._stalled = None
            return self._publisher

    def close(self, timeout: float | None = None) -> None:
        """Closes this process's publisher (tests, and interpreters that stop cleanly)."""
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None and self._pid == os.getpid():
            publisher.close(timeout=timeout)


def _hostname() -> str:
    """Airflow's idea of this host (its ``hostname_callable``) when Airflow is importable."""
    try:
        from airflow.utils.net import get_hostname

        return str(get_hostname())
    except Exception:
        return socket.getfqdn()
