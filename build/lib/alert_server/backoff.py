"""Retry delays for a failed head event: exponential, capped, with full jitter in the top half.

DolphinScheduler retried every 5 s forever; a destination that is down for an hour should
instead see a few attempts an hour, and many instances should not retry in lockstep.
"""

from __future__ import annotations

import random

_RAND = random.Random()


def retry_delay(attempt: int, base: float, cap: float, rand: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failures so far)."""
    exp = min(cap, base * 2.0 ** max(0, attempt - 1))
    r = (rand or _RAND).random()
    return exp / 2 + r * exp / 2
