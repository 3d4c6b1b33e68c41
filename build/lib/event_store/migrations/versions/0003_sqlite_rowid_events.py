"""SQLite: the event sequence becomes the table's rowid (INTEGER PRIMARY KEY).

A BIGINT primary key on SQLite is a separate unique index beside the rowid, one more B-tree
to update per inserted event. As INTEGER it is the rowid itself: rows are stored in sequence
order and reads by sequence walk the table directly. Other databases are unchanged (BIGINT
is already their native key there). The table is rebuilt with its rows (batch mode).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _retype(new: sa.types.TypeEngine[int], old: sa.types.TypeEngine[int]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("events", recreate="always") as batch:
        batch.alter_column(
            "sequence", type_=new, existing_type=old, existing_nullable=False, autoincrement=False
        )


def upgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer())
