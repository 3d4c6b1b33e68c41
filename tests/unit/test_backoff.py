from __future__ import annotations

import random

from listener_common._dispatch import retry_delay


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    rand = random.Random(7)
    delays = [retry_delay(n, 1.0, 30.0, rand) for n in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(30.0, 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0
    spread = {round(retry_delay(4, 1.0, 30.0, rand), 3) for _ in range(20)}
    assert len(spread) > 10  # jitter: many instances do not retry in lockstep
