"""Writing a user's messages together with their vectors, and embedding the messages that lack one.

Messages are embedded before their write transaction opens, so the write lock is held for milliseconds, not for a
model forward; the transaction then stores the rows and the vectors together (all or nothing) under a new store
generation, which is what lets the faiss cache catch up by reading only the rows written since it last looked.
A user forgotten while the embedding ran is not re-created (``ensure_user``'s ``seen``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session

from profiles.embedders import Embedder, encode_in_batches
from profiles.errors import InvalidInputError
from profiles.exchange import HistoryLine
from profiles.models import ROLES, Conversation, Message, MessageEmbedding
from profiles.records import StoredMessage
from profiles.transactions import (
    Transactions,
    bump_generation,
    ensure_user,
    from_db_time,
    to_db_time,
    user_pk,
)

Progress = Callable[[int], None]
"""Called with the number of texts embedded since the last call (for a progress bar)."""


# Built once (Core statements, bound parameters): every chat call runs them (see ``transactions``).
_CONVERSATIONS = cast(Table, Conversation.__table__)
_MESSAGES = cast(Table, Message.__table__)
_CONVERSATION_OWNER = select(_CONVERSATIONS.c.user_id).where(_CONVERSATIONS.c.id == bindparam("id"))
_NEW_CONVERSATION = insert(_CONVERSATIONS).returning(_CONVERSATIONS.c.id)
_NEW_MESSAGES = insert(_MESSAGES).returning(_MESSAGES.c.id, sort_by_parameter_order=True)
_NEW_EMBEDDINGS = insert(cast(Table, MessageEmbedding.__table__))


def check_conversation_owner(session: Session, conversation_id: int, user_id: str, pk: int | None) -> None:
    """``InvalidInputError`` unless conversation ``conversation_id`` exists and is the user's (key ``pk``)."""
    owner = session.scalar(_CONVERSATION_OWNER, {"id": conversation_id})
    if owner is None or owner != pk:
        raise InvalidInputError(f"conversation {conversation_id} does not belong to user {user_id!r}")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
    return role


def stored_message(message: Message) -> StoredMessage:
    return StoredMessage(
        message_id=message.id,
        conversation_id=message.conversation_id,
        role=message.role,
        text=message.text,
        created_at=from_db_time(message.created_at),
    )


def embedding_rows(
    embedder: Embedder, user: int, generation: int, message_ids: Sequence[int], vectors: np.ndarray
) -> list[dict[str, Any]]:
    """``message_embeddings`` rows for messages and their vectors (aligned), written in ``generation``."""
    return [
        {
            "message_id": message_id,
            "embedder": embedder.name,
            "user_id": user,
            "dim": embedder.dim,
            "vector": vector.tobytes(),
            "generation": generation,
        }
        for message_id, vector in zip(message_ids, vectors, strict=True)
    ]


def store_messages(
    transactions: Transactions,
    embedder: Embedder,
    user_id: str,
    lines: list[HistoryLine],
    *,
    conversation_id: int | None,
    progress: Progress | None,
) -> list[StoredMessage]:
    """Store validated lines in one transaction: in ``conversation_id`` (which must be the user's), or in new
    conversations, one per distinct ``line.conversation``. Creates the user when new."""
    if not lines:
        return []
    with transactions.read() as session:
        seen = user_pk(session, user_id)
    vectors = encode_in_batches(embedder, [line.text for line in lines], progress)
    with transactions.write() as session:
        pk = ensure_user(session, user_id, seen)
        conversations: dict[str | None, int] = {}
        if conversation_id is not None:
            check_conversation_owner(session, conversation_id, user_id, pk)
        rows: list[dict[str, Any]] = []
        for line in lines:
            if conversation_id is not None:
                conversation = conversation_id
            elif line.conversation in conversations:
                conversation = conversations[line.conversation]
            else:
                conversation = session.execute(
                    _NEW_CONVERSATION,
                    {"user_id": pk, "title": line.conversation, "created_at": to_db_time(line.created_at)},
                ).scalar_one()
                conversations[line.conversation] = conversation
            rows.append(
                {
                    "conversation_id": conversation,
                    "user_id": pk,
                    "role": line.role,
                    "text": line.text,
                    "created_at": to_db_time(line.created_at),
                }
            )
        ids = list(session.scalars(_NEW_MESSAGES, rows))
        generation = bump_generation(session)
        session.execute(_NEW_EMBEDDINGS, embedding_rows(embedder, pk, generation, ids, vectors))
    return [
        StoredMessage(
            message_id=message_id,
            conversation_id=row["conversation_id"],
            role=row["role"],
            text=row["text"],
            created_at=from_db_time(row["created_at"]),
        )
        for message_id, row in zip(ids, rows, strict=True)
    ]


_UNEMBEDDED = select(_MESSAGES.c.id, _MESSAGES.c.text).where(
    _MESSAGES.c.user_id == bindparam("pk"),
    ~select(MessageEmbedding.__table__.c.message_id)
    .where(
        MessageEmbedding.__table__.c.message_id == _MESSAGES.c.id,
        MessageEmbedding.__table__.c.embedder == bindparam("embedder"),
    )
    .exists(),
)


_FIRST_UNEMBEDDED = _UNEMBEDDED.limit(1)


def unembedded(session: Session, pk: int, embedder: Embedder, *, first_only: bool = False) -> list[Any]:
    """(id, text) of the user's messages that have no vector under ``embedder`` (``first_only``: one at most, to
    ask whether there are any)."""
    statement = _FIRST_UNEMBEDDED if first_only else _UNEMBEDDED
    return list(session.execute(statement, {"pk": pk, "embedder": embedder.name}).all())


def embed_missing(transactions: Transactions, embedder: Embedder, user_id: str) -> int | None:
    """The user's key (None when unknown), after embedding any of their messages that lack a vector under
    ``embedder`` (after switching embedders, say; usually there are none). One read in the common case."""
    with transactions.read() as session:
        pk = user_pk(session, user_id)
        if pk is None:
            return None
        missing = unembedded(session, pk, embedder)
    if not missing:
        return pk
    vectors = encode_in_batches(embedder, [row.text for row in missing])
    with transactions.write() as session:
        if user_pk(session, user_id) != pk:  # forgotten meanwhile: store nothing of theirs
            return None
        generation = bump_generation(session)
        session.execute(
            insert(MessageEmbedding).prefix_with("OR IGNORE", dialect="sqlite"),
            embedding_rows(embedder, pk, generation, [row.id for row in missing], vectors),
        )
    return pk
