"""SQLAlchemy 2.0 models of the profile store. Schema changes go through Alembic migrations in ``migrations/``.

Every row that belongs to a user carries ``user_id`` (the users table's integer key) with ``ON DELETE CASCADE``, so
forgetting a user is one delete, and per-user queries (retrieval above all) filter on an indexed column.
Timestamps are naive UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("user", "assistant", "system")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _user_fk() -> Any:
    return ForeignKey("users.id", ondelete="CASCADE")


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - ids of forgotten users are never reused

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_external_key", "user_id", "external_key", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk(), index=True)
    title: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    external_key: Mapped[str | None] = mapped_column(String(255))  # a caller's own id (LangGraph thread id), per user


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant', 'system')", name="role"),
        Index("ix_messages_user_role_time", "user_id", "role", "created_at"),
        {"sqlite_autoincrement": True},  # a forgotten message's id is never reused by another user's message
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(_user_fk())
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class MessageEmbedding(Base):
    """One message's vector under one embedder. ``generation`` is the store generation that wrote it, so a faiss
    index that has seen generation g can catch up by reading only the rows above g."""

    __tablename__ = "message_embeddings"
    __table_args__ = (Index("ix_message_embeddings_embedder_generation", "embedder", "generation"),)

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    embedder: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk(), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    generation: Mapped[int] = mapped_column(Integer)


class Feedback(Base):
    """A rating of one response, or a chosen/rejected pair. The texts' vectors (under ``embedder``) are kept so
    inference does not re-embed them on every call."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk(), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[float | None] = mapped_column(Float)
    chosen: Mapped[str | None] = mapped_column(Text)
    rejected: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    embedder: Mapped[str | None] = mapped_column(String(255))
    vectors: Mapped[bytes | None] = mapped_column(LargeBinary)


class PreferenceSetting(Base):
    """An explicit ``dimension = pole`` setting; it overrides inference for that dimension."""

    __tablename__ = "preference_settings"

    user_id: Mapped[int] = mapped_column(_user_fk(), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(64), primary_key=True)
    pole: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class RewardHeadRow(Base):
    """A learned per-user reward head (opaque bytes plus JSON metadata), trained elsewhere."""

    __tablename__ = "reward_heads"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_reward_heads_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk())
    name: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class StoreState(Base):
    """One row: the store's identity and the generation counters the faiss cache is checked against.

    ``generation`` grows with every transaction that adds or deletes vectors; ``purged_generation`` is the last one
    that deleted any (a cache older than it must be rebuilt, since deletions cannot be replayed).
    """

    __tablename__ = "store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_uuid: Mapped[str] = mapped_column(String(36))
    generation: Mapped[int] = mapped_column(Integer)
    purged_generation: Mapped[int] = mapped_column(Integer)


MAX_KEY_NAME_LENGTH = 64


class ApiKey(Base):
    """An API key of the server (``profiles.keys``): its hash, never the key, and the users it may act as."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_KEY_NAME_LENGTH), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    users: Mapped[list[str]] = mapped_column(JSON)
    all_users: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
