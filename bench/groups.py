"""The scenario groups in the order they run: the scenarios each measures, and its run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench import group_delivery, group_filters, group_latency, group_publishing, group_scale
from bench.scenarios import Bench

GROUPS: dict[str, tuple[str, ...]] = {
    "publishing": ("1", "2", "6"),
    "delivery": ("3", "4"),
    "latency_and_swap": ("5", "7"),
    "scale": ("8", "10"),
    "cycles": ("9",),
    "filters": ("11",),
}

RUNS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "publishing": group_publishing.publishing,
    "delivery": group_delivery.delivery,
    "latency_and_swap": group_latency.latency_and_swap,
    "scale": group_scale.scale,
    "cycles": group_scale.cycles,
    "filters": group_filters.filters,
}
