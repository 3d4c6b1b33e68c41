"""Tables shared by both servers.

Desired state (plugins, packages, instances) is written by API servers; delivery state by
alert servers; the event log is append-only and stored once, whatever the number of
subscribed instances (each instance keeps only a cursor into it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC with microseconds on every backend; hands back aware datetimes."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


# LONGBLOB on MySQL/MariaDB (a plain BLOB stops at 64 KiB); BYTEA/BLOB elsewhere.
Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Package(Base):
    """A plugin package, immutable and content-addressed: any alert server can load it."""

    __tablename__ = "packages"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(Blob)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Plugin(Base):
    __tablename__ = "plugins"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[str] = mapped_column(String(64))
    entry: Mapped[str] = mapped_column(String(255))
    sdk: Mapped[str] = mapped_column(String(64), default="")
    isolation: Mapped[str] = mapped_column(String(16), default="namespace")
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("packages.sha256"))
    # The parameter form (DolphinScheduler form JSON), as the loaded plugin reported it.
    params_json: Mapped[str] = mapped_column(Text, default="[]")
    state: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    revision: Mapped[int] = mapped_column(Integer, default=1)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ListenerInstance(Base):
    __tablename__ = "listener_instances"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    plugin_id: Mapped[str] = mapped_column(String(63), ForeignKey("plugins.id"), index=True)
    params_json: Mapped[str] = mapped_column(Text, default="{}")
    # Subscribed event type numbers (listener.v1.EventType), comma separated.
    event_types: Mapped[str] = mapped_column(String(64))
    # Desired state: ACTIVE or PAUSED.
    desired_state: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    # "block": retry the head event until it succeeds; "park": after park_after failed
    # attempts, move it to the dead-letter list and go on.
    failure_policy: Mapped[str] = mapped_column(String(16), default="block")
    park_after: Mapped[int] = mapped_column(Integer, default=0)
    # A CEL expression choosing events by content (alert_server.filters); "" takes all.
    filter: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    """Where one instance stands in the event log; written by the alert server that runs it."""

    __tablename__ = "deliveries"

    instance_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("listener_instances.id", ondelete="CASCADE"), primary_key=True
    )
    # Every subscribed event with a sequence up to this one has been delivered.
    delivered_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_delivery_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The alert server running the instance, and until when its lease holds.
    owner: Mapped[str] = mapped_column(String(128), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Bumped by every takeover and every operator change of the cursor: a runner's writes
    # carry the fence it started with and are refused once it moved (a stale owner).
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    # The last attempts' outcomes, newest first, as JSON (see event_store.deliveries).
    recent_attempts: Mapped[str] = mapped_column(Text, default="[]")
    # Events the instance's filter left out, in total (written with the cursor).
    filtered_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ParkedEvent(Base):
    """The dead-letter list: events an instance gave up on, kept for redelivery."""

    __tablename__ = "parked_events"

    instance_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("listener_instances.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    park_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set by an operator: the owning runner delivers it again, out of order.
    redeliver: Mapped[int] = mapped_column(SmallInteger, default=0)


class AlertServerRow(Base):
    """Alert servers alive recently: each takes a fair share of the instances."""

    __tablename__ = "alert_servers"

    server_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(255), default="")
    heartbeat_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """The event log. ``sequence`` is allocated under a lock inside the committing
    transaction (see ``event_store.events``), so committed sequences always form a prefix."""

    __tablename__ = "events"

    # On SQLite an INTEGER primary key is the rowid itself: the table is stored in sequence
    # order with no separate primary key index to maintain on every insert (migration 0003).
    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    # A UUIDv7 (time-ordered; see event_store.events.new_event_id).
    id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[int] = mapped_column(SmallInteger)
    publish_time: Mapped[datetime] = mapped_column(UTCDateTime)
    # The published listener.v1.ListenerEvent, serialized (payload, event_time, source).
    body: Mapped[bytes] = mapped_column(Blob)
    # The W3C traceparent of the publish span when tracing is on (listener_core.tracing):
    # the delivery span links to it and plugins pass it on. NULL when tracing is off.
    traceparent: Mapped[str | None] = mapped_column(String(55), nullable=True)

    __table_args__ = (Index("ix_events_type_sequence", "type", "sequence"),)


class Counter(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class PublishRequest(Base):
    """Remembers a publish's request_id, per caller, so a retried publish returns the first
    result; ``digest`` tells a retry from a reuse with other events (None: stored before
    digests). ``caller`` is "" for rows from before request ids were scoped to callers."""

    __tablename__ = "publish_requests"

    caller: Mapped[str] = mapped_column(String(80), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_sequence: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
