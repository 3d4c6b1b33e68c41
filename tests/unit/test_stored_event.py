"""StoredEvent's own __init__ (faster than the one dataclasses writes for a frozen class)
keeps what the generated one gave: positional and keyword fields, the default, equality,
hashing, immutability, replace() and pickling."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime

import pytest

from event_store.events import StoredEvent

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def test_it_is_built_as_the_generated_init_built_it() -> None:
    event = StoredEvent(7, "id-7", 12, NOW, b"body")
    same = StoredEvent(
        sequence=7, id="id-7", type=12, publish_time=NOW, body=b"body", traceparent=None
    )
    assert event == same and hash(event) == hash(same)
    assert dataclasses.astuple(event) == (7, "id-7", 12, NOW, b"body", None)
    assert repr(event).startswith("StoredEvent(sequence=7, id='id-7', type=12,")
    assert dataclasses.replace(event, traceparent="tp").traceparent == "tp"
    assert pickle.loads(pickle.dumps(event)) == event
    assert StoredEvent(1, "a", 1, NOW, b"", "tp") != StoredEvent(1, "a", 1, NOW, b"", None)


def test_it_stays_frozen_and_strict() -> None:
    event = StoredEvent(7, "id-7", 12, NOW, b"body")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        StoredEvent(7, "id-7")  # type: ignore[call-arg]
