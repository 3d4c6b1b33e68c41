"""Delivery engine: failure policies, dead letters, leases with fencing, attempt history.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("listener_instances") as batch:
        batch.add_column(
            sa.Column("failure_policy", sa.String(16), nullable=False, server_default="block")
        )
        batch.add_column(sa.Column("park_after", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("lease_until", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("fence", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("recent_attempts", sa.Text(), nullable=False, server_default=sa.text("'[]'"))
        )
    op.create_table(
        "parked_events",
        sa.Column("instance_id", sa.String(63), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("park_time", TIMESTAMP, nullable=False),
        sa.Column("redeliver", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["listener_instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_id", "sequence"),
    )
    op.create_table(
        "alert_servers",
        sa.Column("server_id", sa.String(128), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("heartbeat_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("server_id"),
    )


def downgrade() -> None:
    op.drop_table("alert_servers")
    op.drop_table("parked_events")
    with op.batch_alter_table("deliveries") as batch:
        for column in ("recent_attempts", "fence", "lease_until", "owner"):
            batch.drop_column(column)
    with op.batch_alter_table("listener_instances") as batch:
        batch.drop_column("park_after")
        batch.drop_column("failure_policy")
