"""Request ids scoped to their caller, with a digest of what they published.

``publish_requests`` was keyed by ``request_id`` alone, so one caller's id answered another
caller's publish with the first one's events. The key becomes (``caller``, ``request_id``),
and ``digest`` (sha256 of the published events) tells a retry from a reuse with other
content. Existing rows are kept with the caller "" and no digest: the API server still
answers a retry of them, whoever sends it, as before (they are purged with the retention).

The table is rebuilt (a new table, the rows copied, the old one dropped, the new one
renamed): changing a primary key in place differs on every database, and this works on all.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Frozen copy of event_store.models' column type: migrations never import the models.
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "publish_requests_scoped",
        sa.Column("caller", sa.String(length=80), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("create_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("caller", "request_id"),
    )
    op.execute(
        "INSERT INTO publish_requests_scoped "
        "(caller, request_id, digest, first_sequence, count, create_time) "
        "SELECT '', request_id, NULL, first_sequence, count, create_time FROM publish_requests"
    )
    op.drop_table("publish_requests")
    op.rename_table("publish_requests_scoped", "publish_requests")


def downgrade() -> None:
    op.create_table(
        "publish_requests_unscoped",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("create_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    # One row per request id: the earliest publish that used it.
    op.execute(
        "INSERT INTO publish_requests_unscoped (request_id, first_sequence, count, create_time) "
        "SELECT p.request_id, p.first_sequence, p.count, p.create_time FROM publish_requests p "
        "WHERE p.first_sequence = (SELECT MIN(q.first_sequence) FROM publish_requests q "
        "WHERE q.request_id = p.request_id)"
    )
    op.drop_table("publish_requests")
    op.rename_table("publish_requests_unscoped", "publish_requests")
