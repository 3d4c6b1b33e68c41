"""Trace context: ``events.traceparent``.

The W3C ``traceparent`` of the span that published the event, written when the API server
traces (``otel_endpoint``): the delivery span links to it, and plugins pass it on to their
destinations. Nullable with no default, so existing events keep NULL and adding the column
rewrites no rows (PostgreSQL and MariaDB add it in place, SQLite appends it to the schema):
servers of the previous version keep running beside the new ones during a rolling upgrade.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("events") as batch:
        batch.drop_column("traceparent")
