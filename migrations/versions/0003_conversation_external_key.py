"""Conversations keyed by any string: an external key per user (a LangGraph thread id, a session id).

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-28 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_key", sa.String(length=255), nullable=True))
        # one conversation per (user, key); rows without a key (NULL) never collide
        batch_op.create_index("ix_conversations_user_external_key", ["user_id", "external_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_user_external_key")
        batch_op.drop_column("external_key")
