"""A read's rows to events (``event_store.stored.stored_events``): the publish time as
``value.replace(tzinfo=UTC)`` gave it, whichever way the driver returns it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from event_store import stored
from event_store.events import StoredEvent

NAIVE = [
    datetime(2026, 11, 23, 12, 0, 0, 123456),
    datetime(2026, 11, 23, 12, 0, 0),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(1969, 12, 31, 23, 59, 59, 999999),
    datetime(1970, 1, 1),
]


@pytest.mark.parametrize("value", NAIVE, ids=str)
def test_aware_gives_what_replace_gave(value: datetime) -> None:
    expected = value.replace(tzinfo=UTC)
    for raw in (value, str(value), value.isoformat()):
        got = stored._aware(raw)
        assert (got, repr(got), got.tzinfo, got.fold) == (expected, repr(expected), UTC, 0)
        assert got.tzinfo is UTC


def test_aware_keeps_replacing_a_zone_a_driver_gave() -> None:
    """Not what any driver here does; kept as it was (the wall time, read as UTC)."""
    zoned = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert repr(stored._aware(zoned)) == repr(zoned.replace(tzinfo=UTC))
    assert repr(stored._aware(zoned.isoformat())) == repr(zoned.replace(tzinfo=UTC))


def test_rows_become_events() -> None:
    rows = [
        (7, "id-7", 13, "2026-11-23 12:00:00.123456", b"body", None),
        (8, "id-8", 14, datetime(2026, 11, 23, 12, 0, 1), memoryview(b"view"), "00-ab-cd-01"),
    ]
    assert stored.stored_events(rows) == [
        StoredEvent(7, "id-7", 13, datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC), b"body"),
        StoredEvent(
            8, "id-8", 14, datetime(2026, 11, 23, 12, 0, 1, tzinfo=UTC), b"view", "00-ab-cd-01"
        ),
    ]
    assert type(stored.stored_events(rows)[1].body) is bytes


def test_a_run_of_equal_publish_times_is_converted_once_and_each_row_gets_its_own() -> None:
    texts = ["2026-11-23 12:00:00.000001"] * 3 + ["2026-11-23 12:00:01.000000"] * 2
    texts += ["2026-11-23 12:00:00.000001", "1970-01-01 00:00:00.000000"]
    for values in (texts, [datetime.fromisoformat(t) for t in texts]):
        rows = [(n, f"id-{n}", 13, value, b"", None) for n, value in enumerate(values)]
        found = stored.stored_events(rows)
        assert [e.publish_time for e in found] == [stored._aware(v) for v in values]
        assert [repr(e.publish_time) for e in found] == [
            repr(datetime.fromisoformat(t).replace(tzinfo=UTC)) for t in texts
        ]
        assert found[0].publish_time is found[2].publish_time
        assert found[3].publish_time is not found[2].publish_time
    assert stored.stored_events([]) == []
