"""Content filters: ``listener_instances.filter`` and ``deliveries.filtered_count``.

The filter is a CEL expression (empty: every event of the instance's types); the count is
how many events it left out, shown in the instance's status. Both columns get defaults, so
existing instances keep taking every event of their types.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "listener_instances",
        sa.Column("filter", sa.Text(), nullable=False, server_default=sa.text("''")),
    )
    op.add_column(
        "deliveries",
        sa.Column("filtered_count", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    # Batch mode: SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("filtered_count")
    with op.batch_alter_table("listener_instances") as batch:
        batch.drop_column("filter")
