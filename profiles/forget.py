"""Forgetting a user for good: deleting their rows (verified), unbinding them from API keys, and scrubbing the files.

``ProfileStore.forget`` runs ``delete_user`` (one write transaction), then drops the user from the faiss cache
(``IndexCache.forget_user``), then ``scrub``. The rows go by ``ON DELETE CASCADE`` from the users table; the
transaction counts what every owned table held, checks that nothing is left (a connection with foreign keys off
would leave rows: then nothing is deleted) and starts a purged generation, so every process's index cache is rebuilt
without the user. Deleted SQLite pages are zeroed (secure_delete); ``scrub`` then empties the WAL, so the text
survives in no file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, delete, func, select

from profiles.database import BUSY_TIMEOUT_MS
from profiles.errors import ForgetIncompleteError, ProfileError
from profiles.models import (
    ApiKey,
    Conversation,
    Feedback,
    Message,
    MessageEmbedding,
    PreferenceSetting,
    RewardHeadRow,
    User,
)
from profiles.transactions import Transactions, bump_purged_generation, require_user

_OWNED: dict[str, type[Conversation | Message | MessageEmbedding | Feedback | PreferenceSetting | RewardHeadRow]] = {
    "conversations": Conversation,
    "messages": Message,
    "embeddings": MessageEmbedding,
    "feedback": Feedback,
    "preferences": PreferenceSetting,
    "reward_heads": RewardHeadRow,
}
"""Every table whose rows belong to one user, by the name ``ForgetReport.deleted`` counts them under."""


def delete_user(transactions: Transactions, user_id: str) -> tuple[int, dict[str, int], int]:
    """Delete the user's rows and their API-key bindings in one transaction. Returns the user's key, the rows
    deleted per kind (and ``key_bindings``), and the purged generation the transaction started."""
    with transactions.write() as session:
        pk = require_user(session, user_id)
        deleted: dict[str, int] = {
            name: session.scalar(select(func.count()).select_from(model).where(model.user_id == pk)) or 0
            for name, model in _OWNED.items()
        }
        session.execute(delete(User).where(User.id == pk))
        leftovers = {
            name: session.scalar(select(func.count()).select_from(model).where(model.user_id == pk))
            for name, model in _OWNED.items()
        }
        if any(leftovers.values()):  # foreign keys off (another tool's connection?): refuse, roll back
            raise ProfileError(f"forgetting {user_id!r} left rows behind {leftovers}; nothing was deleted")
        deleted["key_bindings"] = 0
        for key in session.scalars(select(ApiKey)).all():  # a handful of rows: the server's keys
            if user_id in key.users:
                key.users = [user for user in key.users if user != user_id]
                deleted["key_bindings"] += 1
        generation = bump_purged_generation(session)
    return pk, deleted, generation


def scrub(engine: Engine, database: Path | None, wait_s: float, what: str) -> Literal["truncated", "none"]:
    """Checkpoint the WAL of the SQLite file ``database`` into it and empty it, waiting up to ``wait_s`` for other
    connections' read transactions; ``ForgetIncompleteError`` when they outlast it. ``"none"`` without a file."""
    if database is None:
        return "none"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            busy, _log_frames, _checkpointed = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.close()
    finally:
        raw.close()
    wal = database.with_name(database.name + "-wal")
    left = wal.stat().st_size if wal.exists() else 0
    if busy or left:
        raise ForgetIncompleteError(
            f"{what} may still be in {wal} ({left} bytes): another connection kept a read transaction open "
            f"for more than {wait_s:g} s; close the other programs using {database.name}, then run "
            f"`panda-chat profile scrub` (ProfileStore.scrub())"
        )
    return "truncated"
