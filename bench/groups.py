"""The scenario groups in the order they run: the scenarios each measures, and its run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench import (
    group_delivery,
    group_filters,
    group_latency,
    group_publishing,
    group_round3,
    group_scale,
)
from bench.scenarios import Bench

GROUPS: dict[str, tuple[str, ...]] = {
    "publishing": ("1", "2", "6"),
    "api_workers": ("1",),  # 1b
    "delivery": ("3", "4"),
    "latency_and_swap": ("5", "7"),
    "latency_batches": ("5",),  # 5b
    "scale": ("8", "10"),
    "scale_large": ("8",),  # 8b
    "cycles": ("9",),
    "filters": ("11",),
    "gateway_cost": ("12",),
}

RUNS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "publishing": group_publishing.publishing,
    "api_workers": group_round3.api_workers,
    "delivery": group_delivery.delivery,
    "latency_and_swap": group_latency.latency_and_swap,
    "latency_batches": group_round3.latency_batches,
    "scale": group_scale.scale,
    "scale_large": group_round3.scale_large,
    "cycles": group_scale.cycles,
    "filters": group_filters.filters,
    "gateway_cost": group_round3.gateway_cost,
}
