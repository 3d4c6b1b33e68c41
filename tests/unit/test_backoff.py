from __future__ import annotations

import random
import statistics

from listener_common._dispatch import retry_delay


def test_backoff_grows_exponentially_is_capped_and_fully_jittered() -> None:
    rand = random.Random(7)
    for n in range(1, 9):
        ceiling = min(30.0, 2 ** (n - 1))
        delays = [retry_delay(n, 1.0, 30.0, rand) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        # Full jitter: the whole range is used, the bottom half too, around ceiling / 2.
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9
        assert 0.4 * ceiling < statistics.mean(delays) < 0.6 * ceiling
    spread = {round(retry_delay(4, 1.0, 30.0, rand), 3) for _ in range(20)}
    assert len(spread) > 10  # jitter: many instances do not retry in lockstep
