"""This server's leases: renew them, know until when each may be acted on, take or give a share.

The store holds who owns which instance (``event_store.leases``); this object is the server's
side of it. A renewal or claim sent at ``sent_at`` makes its leases valid until
``lease_clock.validity(sent_at, ttl)`` by this server's monotonic clock, and leases of others
are claimed only once seen unchanged for a full term (``alert_server.lease_clock``). Which
runners to stop, kick or start as a result is the host's part (``alert_server.host``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from alert_server import lease_clock
from event_store import leases
from event_store.models import utcnow
from event_store.retry import in_transaction
from event_store.store import Store


@dataclass
class Renewal:
    """What one renewal found: the instances this server holds (with their fences), the
    leases it does not hold, and the other servers seen alive."""

    owned: dict[str, int]
    others: dict[str, leases.LeaseToken]
    live: list[str]


class LeaseBalancer:
    def __init__(self, store: Store, server_id: str, address: str, ttl: float) -> None:
        self.store = store
        self.server_id = server_id
        self.address = address
        self.ttl = ttl
        # Until when each held lease may be acted on (monotonic), and what this server saw of
        # the others' leases and beats.
        self._valid: dict[str, float] = {}
        self._leases_seen = lease_clock.Watch(ttl)
        self._beats_seen = lease_clock.Watch(ttl)
        self._last_token: datetime | None = None
        # The last successful renewal's view (the other servers alive), for claiming a new
        # instance between cycles.
        self._live: list[str] | None = None
        # The leases this server holds by its own account, with their fences; None once one
        # of its lease transactions failed (it may have committed): the next renewal reads
        # every held row (``leases.renew``).
        self._held: dict[str, int] | None = None

    def valid_until(self, instance_id: str) -> float:
        """Until when (event loop time) the lease may be acted on; 0 for one not held."""
        return self._valid.get(instance_id, 0.0)

    def _token(self) -> datetime:
        """The ``lease_until`` to write: a full term from now, and always a new value."""
        self._last_token = leases.next_token(
            utcnow() + timedelta(seconds=self.ttl), self._last_token
        )
        return self._last_token

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A lease transaction of this server: when it fails (or is cancelled) its outcome is
        unknown, so what this server holds is no longer known without reading it."""
        try:
            yield
        except BaseException:
            self._held = None
            raise

    def _granted(self, instance_ids: Iterable[str], sent_at: float) -> None:
        until = lease_clock.validity(sent_at, self.ttl)
        for iid in instance_ids:
            self._valid[iid] = until

    async def renew(self) -> Renewal:
        """Heartbeat, renew every held lease and read the others', in one transaction.

        The send time of the attempt that succeeded bounds how long the renewed leases may be
        acted on; a failure forgets what was seen of the others (it says nothing about who is
        alive after the gap) and raises."""
        loop = asyncio.get_running_loop()
        sent_at = 0.0

        async def renewal(
            session: AsyncSession,
        ) -> tuple[dict[str, int], dict[str, datetime], dict[str, leases.LeaseToken]]:
            nonlocal sent_at
            sent_at = loop.time()  # of the attempt that succeeds
            await leases.heartbeat(session, self.server_id, self.address)
            owned = await leases.renew(session, self.server_id, self._token(), known)
            return (
                owned,
                await leases.heartbeats(session),
                await leases.others(session, self.server_id),
            )

        known = self._held
        try:
            with self._writing():
                owned, beats, others = await in_transaction(self.store, renewal)
        except Exception:
            self._live = None
            self._leases_seen.forget()
            self._beats_seen.forget()
            raise
        self._held = dict(owned)
        self._granted(owned, sent_at)
        for iid in [i for i in self._valid if i not in owned]:
            del self._valid[iid]
        now = loop.time()
        self._leases_seen.observe(others, now)
        beats.pop(self.server_id, None)
        self._beats_seen.observe(beats, now)
        live = [s for s in beats if not self._beats_seen.unchanged_for_a_term(s, now)]
        self._live = live
        return Renewal(owned, others, live)

    @staticmethod
    def share(renewal: Renewal) -> int:
        """How many instances this server should hold (``leases.fair_share``)."""
        return leases.fair_share(len(renewal.owned), renewal.others, renewal.live)

    async def release(self, renewal: Renewal, instance_id: str) -> None:
        """Gives a held lease back (another server is short); its runner is stopped first."""
        with self._writing():
            await in_transaction(
                self.store,
                partial(leases.release, instance_id=instance_id, server_id=self.server_id),
            )
        renewal.owned.pop(instance_id)
        self._valid.pop(instance_id, None)
        self._forget_held(instance_id)

    async def claim(self, renewal: Renewal, count: int) -> dict[str, int]:
        """Claims up to ``count`` leases that are free or seen unchanged for a full term;
        returns the claimed instances with their fences."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        candidates = [
            (iid, token)
            for iid, token in sorted(renewal.others.items())
            if not token.owner or self._leases_seen.unchanged_for_a_term(iid, now)
        ][:count]
        if not candidates:
            return {}
        sent_at = 0.0

        async def claim(session: AsyncSession) -> dict[str, int]:
            nonlocal sent_at
            sent_at = loop.time()
            return await leases.claim_many(session, candidates, self.server_id, self._token())

        with self._writing():
            claimed = await in_transaction(self.store, claim)
        self._hold(claimed)
        self._granted(claimed, sent_at)
        return claimed

    async def claim_new(self, instance_id: str) -> dict[str, int] | None:
        """Claims one instance's lease between cycles if it is free and this server is below
        its fair share with it counted; returns it with its fence (also when this server holds it
        already), nothing when it is not to be claimed, or None when only a full cycle can tell.

        A created (or re-applied) instance's lease is free, and free leases are taken at once
        (``claim``): this takes just that one, so creating N instances costs N single-row
        claims rather than N renewals of every held lease. The share is reckoned from the last
        renewal's other live servers and the count of leases per owner (one grouped read, skipped
        when no other server is alive); without
        a renewal yet or since one failed, None: the caller runs a full cycle. A lease held by
        another server is left to the cycles (taken only once seen lapsed for a full term)."""
        live = self._live
        if live is None:
            return None
        loop = asyncio.get_running_loop()
        sent_at = 0.0

        async def claim(session: AsyncSession) -> dict[str, int]:
            nonlocal sent_at
            sent_at = loop.time()  # of the attempt that succeeds
            token = await leases.token_of(session, instance_id)
            if token is None:
                return {}
            if token.owner == self.server_id:  # held (its runner failed to start): retry
                return {instance_id: token.fence} if instance_id in self._valid else {}
            if token.owner:
                return {}
            if live:  # alone, this server's share is every instance
                counts = await leases.owner_counts(session)
                owned = counts.pop(self.server_id, 0)
                if owned >= leases.share_of(owned, counts, live):
                    return {}
            return await leases.claim_many(
                session, [(instance_id, token)], self.server_id, self._token()
            )

        with self._writing():
            claimed = await in_transaction(self.store, claim)
        self._hold(claimed)
        self._granted({i for i in claimed if i not in self._valid}, sent_at)
        return claimed

    def _hold(self, claimed: dict[str, int]) -> None:
        if self._held is not None:
            self._held.update(claimed)

    def _forget_held(self, instance_id: str) -> None:
        if self._held is not None:
            self._held.pop(instance_id, None)

    async def leave(self) -> None:
        """Frees every lease of this server at once (a clean shutdown; runners stopped first)."""
        self._valid.clear()
        self._held = None
        await in_transaction(self.store, partial(leases.leave, server_id=self.server_id))
