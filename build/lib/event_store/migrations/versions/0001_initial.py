"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 21:12:40.628393
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Frozen copies of event_store.models' column types: migrations never import the models.
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    counters = op.create_table('counters',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    # The event sequence counter (see event_store.events).
    op.bulk_insert(counters, [{"name": "events", "value": 0}])
    op.create_table('events',
    sa.Column('sequence', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.SmallInteger(), nullable=False),
    sa.Column('publish_time', TIMESTAMP, nullable=False),
    sa.Column('body', BLOB, nullable=False),
    sa.PrimaryKeyConstraint('sequence'),
    sa.UniqueConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_type_sequence', ['type', 'sequence'], unique=False)

    op.create_table('packages',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('data', BLOB, nullable=False),
    sa.Column('create_time', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )
    op.create_table('publish_requests',
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('first_sequence', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('create_time', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    op.create_table('plugins',
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('entry', sa.String(length=255), nullable=False),
    sa.Column('sdk', sa.String(length=64), nullable=False),
    sa.Column('isolation', sa.String(length=16), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('params_json', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('create_time', TIMESTAMP, nullable=False),
    sa.Column('update_time', TIMESTAMP, nullable=False),
    sa.ForeignKeyConstraint(['sha256'], ['packages.sha256'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('listener_instances',
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('plugin_id', sa.String(length=63), nullable=False),
    sa.Column('params_json', sa.Text(), nullable=False),
    sa.Column('event_types', sa.String(length=64), nullable=False),
    sa.Column('desired_state', sa.String(length=16), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('create_time', TIMESTAMP, nullable=False),
    sa.Column('update_time', TIMESTAMP, nullable=False),
    sa.ForeignKeyConstraint(['plugin_id'], ['plugins.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('listener_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_listener_instances_plugin_id'), ['plugin_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('instance_id', sa.String(length=63), nullable=False),
    sa.Column('delivered_seq', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('next_attempt_time', TIMESTAMP, nullable=True),
    sa.Column('last_delivery_time', TIMESTAMP, nullable=True),
    sa.Column('update_time', TIMESTAMP, nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['listener_instances.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_id')
    )


def downgrade() -> None:
    op.drop_table('deliveries')
    with op.batch_alter_table('listener_instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_listener_instances_plugin_id'))

    op.drop_table('listener_instances')
    op.drop_table('plugins')
    op.drop_table('publish_requests')
    op.drop_table('packages')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_type_sequence')

    op.drop_table('events')
    op.drop_table('counters')
