"""What a delivery runner is built from: what all runners of a server share (``RunnerDeps``)
and what one instance asks of its runner (``InstanceSpec``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alert_server.progress import ProgressWriter
from alert_server.reads import SharedReads
from alert_server.wakeup import SequenceSignal
from event_store.store import Store
from listener_common._dispatch import FailurePolicy
from listener_core.event_filter import EventFilter
from listener_core.metrics import NO_METRICS, AlertMetrics, NullMetrics
from listener_core.settings import DeliverySettings
from listener_core.tracing import Tracing


@dataclass(frozen=True)
class RunnerDeps:
    """What every runner of one alert server shares: built by the host for each runner."""

    store: Store
    signal: SequenceSignal
    settings: DeliverySettings
    owner: str  # this server's id, written with every fenced write
    progress: ProgressWriter
    reads: SharedReads
    # Delivered/failed/parked counts and latency (listener_core.metrics), per batch.
    metrics: AlertMetrics | NullMetrics = NO_METRICS
    # A delivery span per batch (listener_core.tracing); None: traces are off.
    tracing: Tracing | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """What one listener instance asks of its runner, from its row and its plugin's form:
    built by ``alert_server.runner_factory``; an update builds a new one (a new runner)."""

    instance_id: str
    config: dict[str, Any]  # typed params, secrets opened
    types: Sequence[int]
    policy: FailurePolicy
    # Compiled once, when the runner starts: an update restarts the runner, so a changed
    # filter applies from the next event read.
    content_filter: EventFilter | None = None
