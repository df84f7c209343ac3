"""API keys of the HTTP server; on PostgreSQL with pgvector, a vector column for retrieval in SQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 23:10:00

``api_keys``: see ``profiles.keys``. ``message_embeddings.embedding`` (PostgreSQL only, when the ``vector``
extension is available): a pgvector copy of the float32 ``vector`` bytes, which stay the source of truth. The store
fills it for a user's new rows before searching, and creates one HNSW index per embedding width on first use
(``profiles.pgvector``), since one untyped column holds every embedder's vectors.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("all_users", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    bind = op.get_bind()
    if (
        bind.dialect.name == "postgresql"
        and bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).scalar()
    ):
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
        op.execute("ALTER TABLE message_embeddings ADD COLUMN embedding vector")
        op.execute(
            "CREATE INDEX ix_message_embeddings_unsynced ON message_embeddings (user_id) WHERE embedding IS NULL"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_message_embeddings_unsynced")
        op.execute("ALTER TABLE message_embeddings DROP COLUMN IF EXISTS embedding")
    op.drop_table("api_keys")
