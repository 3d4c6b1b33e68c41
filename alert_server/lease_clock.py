"""When a lease may be acted on: the holder's validity and the taker's wait.

The argument (the standard lease discipline of Gray & Cheriton, as in Chubby):

* **Holder.** A renewal (or claim) that succeeded gives the holder ``lease_ttl - margin``
  seconds of validity, counted on its own monotonic clock from the moment it *sent* the
  renewal, not from when the reply came back. While the validity lasts its runners hand
  events to plugins; when it runs out without a newer successful renewal they stop: no new
  event or batch starts, and a plugin call still in flight is cut off at that moment
  (``alert_server.delivery``). A renewal whose outcome is unknown (the store went away
  mid-commit) extends nothing.
* **Taker.** A lease is never judged lapsed by comparing the stored ``lease_until`` with the
  taker's wall clock. The taker watches each lease's token (owner, fence, ``lease_until``,
  which every renewal changes) and may claim it only once it has seen the same token for a
  full ``lease_ttl`` on *its own* monotonic clock. Its claim names that token, so it fails if
  the owner renewed meanwhile. After its own store access failed (an outage, a cut
  network), it forgets everything it watched and starts over: it does not take the failed
  heartbeats of servers it could not see for dead, nor count itself as the only live one.
  Free leases (released by an owner that stopped first) may be claimed at once.

Why this holds: the taker first saw the token at a moment after the renewal that wrote it
was committed, hence after the holder sent it. The holder stops ``lease_ttl - margin``
seconds after sending; the taker starts at least ``lease_ttl`` seconds after its first
sight. So the holder has stopped before the taker starts as long as the two monotonic
clocks do not drift apart by more than ``margin`` over one lease term (with the margin at a
fifth of the term, a rate error of about 10 % each way): **no assumption on wall clocks**,
only on clock *rates*, which hold on any sane host (NTP slews wall clocks, never the
monotonic ones). Also assumed: a process paused for longer than the margin in the middle
of handing over an event (a stopped VM, SIGSTOP) can still deliver that one event late,
and a destination that received part of a call cut off at the deadline keeps it; plugins
de-duplicate by event id for that, as for every redelivery. The fence stays as a second
line: a stale holder's cursor writes are refused.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

#: The holder's safety margin, as a fraction of ``lease_ttl``.
MARGIN_FRACTION = 0.2


def margin(lease_ttl: float) -> float:
    return lease_ttl * MARGIN_FRACTION


def validity(sent_at: float, lease_ttl: float) -> float:
    """The monotonic time until which a renewal sent at ``sent_at`` may be acted on."""
    return sent_at + lease_ttl - margin(lease_ttl)


@dataclass
class Watch:
    """Tokens seen by one server, with the monotonic time each was first seen unchanged."""

    lease_ttl: float
    _first_seen: dict[str, tuple[Hashable, float]] = field(default_factory=dict)

    def observe(self, tokens: Mapping[str, Hashable], now: float) -> None:
        """Records one successful read of every token (keys absent now are dropped)."""
        seen = self._first_seen
        for key in [k for k in seen if k not in tokens]:
            del seen[key]
        for key, token in tokens.items():
            old = seen.get(key)
            if old is None or old[0] != token:
                seen[key] = (token, now)

    def unchanged_for_a_term(self, key: str, now: float) -> bool:
        """Whether ``key``'s token has been seen unchanged for a full lease term."""
        old = self._first_seen.get(key)
        return old is not None and now - old[1] >= self.lease_ttl

    def forget(self) -> None:
        """After a failed read: nothing seen before the gap counts any more."""
        self._first_seen.clear()
