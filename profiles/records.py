"""What the profile store returns: messages, search hits, users, feedback pairs, reward heads, forget reports.

Frozen pydantic models, apart from the store's code, so the parts of the store (``profiles.messages``,
``profiles.feedback``, ``profiles.forget``...) and their callers share one definition of each, and importing them
costs no database or faiss import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class StoredMessage(BaseModel):
    """A message as stored."""

    model_config = ConfigDict(frozen=True)

    message_id: int
    conversation_id: int
    role: str
    text: str
    created_at: datetime


class SearchHit(BaseModel):
    """A retrieved message and its cosine similarity to the query."""

    model_config = ConfigDict(frozen=True)

    message_id: int
    conversation_id: int
    role: str
    text: str
    score: float
    created_at: datetime


class UserSummary(BaseModel):
    """A user as listed. ``key`` is the database key: it names a user whose id was stored before ids were validated
    (an id with a control character cannot be typed), for ``panda-chat profile forget --key``."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    key: int
    created_at: datetime
    messages: int
    last_message_at: datetime | None


class FeedbackPair(BaseModel):
    """A preference pair for Bradley-Terry training: ``chosen`` was preferred to ``rejected`` for ``prompt``."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    chosen: str
    rejected: str
    created_at: datetime


class StoredRewardHead(BaseModel):
    """A learned reward head as stored: opaque bytes (``panda_chat`` reads them) and JSON metadata."""

    model_config = ConfigDict(frozen=True)

    name: str
    data: bytes
    meta: dict[str, Any]
    created_at: datetime


class ForgetReport(BaseModel):
    """What ``forget`` deleted: rows per kind, the index entries removed from the loaded cache, and what became of
    the cache file (``rewritten`` without the user, ``deleted`` to be rebuilt on the next search, or ``none``)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    deleted: dict[str, int]
    index_entries: int
    index_file: Literal["rewritten", "deleted", "none"]
    wal: Literal["truncated", "none"] = "none"
    """``truncated``: the SQLite WAL was checkpointed into the (secure-deleted) database file and emptied."""
