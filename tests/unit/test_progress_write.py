"""deliveries.record_progress_many (the progress writer's one statement, built once): the
cursor, history, filtered count and times it writes, and the writes it refuses."""

from __future__ import annotations

from datetime import timedelta

from event_store import deliveries
from event_store.models import Delivery, utcnow
from event_store.retry import in_transaction
from event_store.store import Store
from tests.support.delivery_rows import add_instances


async def test_progress_is_written_with_its_time_and_stale_writes_are_refused(
    db_url: str,
) -> None:
    store = await Store.open(db_url)
    try:
        await add_instances(store, ("i-a", "i-b"), owner="me", fence=2, filtered_count=7)
        for round_, (seq_a, filt_a) in enumerate([(5, None), (9, 11)]):
            before = utcnow() - timedelta(seconds=1)
            history = deliveries.history_json([{"sequence": seq_a, "round": round_}])
            entries: list[tuple[str, str, int, int, str] | tuple[str, str, int, int, str, int]]
            entries = [("i-b", "other", 2, 50, "[]"), ("i-a", "me", 2, seq_a, history)]
            if filt_a is not None:
                entries[1] = (*entries[1][:5], filt_a)
            refused = await in_transaction(
                store, lambda s, e=entries: deliveries.record_progress_many(s, e)
            )
            after = utcnow() + timedelta(seconds=1)
            assert refused == {"i-b"}  # another owner: refused, untouched
            async with store.reader() as session:
                a = await session.get(Delivery, "i-a")
                b = await session.get(Delivery, "i-b")
            assert a is not None and b is not None
            assert a.delivered_seq == seq_a and a.recent_attempts == history
            assert a.filtered_count == (7 if filt_a is None else filt_a)
            assert a.last_delivery_time is not None and before <= a.last_delivery_time <= after
            assert a.update_time == a.last_delivery_time
            assert b.delivered_seq == 0 and b.last_delivery_time is None
        # A cursor never moves back, even with the right owner and fence.
        await in_transaction(
            store, lambda s: deliveries.record_progress_many(s, [("i-a", "me", 2, 3, "[]")])
        )
        async with store.reader() as session:
            a = await session.get(Delivery, "i-a")
        assert a is not None and a.delivered_seq == 9
    finally:
        await store.close()
