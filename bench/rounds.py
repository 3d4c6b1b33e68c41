"""Alternated measurements: two configurations measured in rounds whose order flips, so
that a drift of the shared box's load falls on both alike (targets 1b, 11, 11b and 12)."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def alternated(
    names: Sequence[str],
    measure: Callable[[str, int], Awaitable[T]],
    rounds: int,
    *,
    warmup: bool = False,
) -> dict[str, list[T]]:
    """``rounds`` measurements of each configuration, ``measure(name, round)``, in an order
    that flips every round (A B, B A, A B, ...), after one uncounted round when ``warmup``.
    Measured always in the same order, the second read 0.92-0.94 of the first on a box whose
    load drifted, with nothing different between them (12, sixth sitting of round three)."""
    figures: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(rounds + warmup):
        for name in names if round_ % 2 == 0 else names[::-1]:
            measured = await measure(name, round_)
            if round_ >= warmup:
                figures[name].append(measured)
    return figures


def quartiles(values: list[float]) -> list[float]:
    """The first and third quartiles of alternated rounds' ratios, rounded: half the rounds
    fall between them, which says how far their median resolves."""
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return [round(q1, 3), round(q3, 3)]
