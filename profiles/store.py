"""``ProfileStore``: each user's conversation history, feedback and settings, and what is inferred from them.

The database (SQLite, or PostgreSQL through any SQLAlchemy URL) is the source of truth. ``ProfileStore`` is the one
object callers use; the work is done by small parts, each a module with one job:

- ``profiles.transactions``: read/write transactions, user keys, generation counters (shared by all parts);
- ``profiles.messages``: writing messages with their vectors (embedded outside the write transaction);
- ``profiles.index_cache``: the faiss cache of the vectors and the policy that keeps it faithful (SQLite);
- ``profiles.pgvector``: retrieval in SQL (PostgreSQL with pgvector);
- ``profiles.feedback``: recording feedback, pairs for reward training, feedback as inference evidence;
- ``profiles.export_import``: a user's rows to and from the export format of ``profiles.exchange``;
- ``profiles.forget``: deleting a user for good and scrubbing the files.

Every query path is scoped to one user: the index only scans that user's id range, pgvector queries filter by user
in the same statement, and texts are fetched with ``WHERE user_id = :user``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self, cast

import numpy as np
from sqlalchemy import CursorResult, Engine, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from profiles import feedback as feedback_part
from profiles import forget as forget_part
from profiles.catalog import PreferenceCatalog
from profiles.context import PreferenceContext
from profiles.database import create_store_engine, default_url, normalise_url, sqlite_file, upgrade_schema
from profiles.embedders import Embedder, EmbedderSpec, encode_normalised, resolve_embedder
from profiles.errors import InvalidInputError, UnknownUserError, UserExistsError
from profiles.exchange import HistoryLine, ProfileExport, as_utc
from profiles.export_import import export_user, import_user
from profiles.ids import validate_user_id
from profiles.index import DEFAULT_NLIST, EmbeddingIndex
from profiles.index_cache import IndexCache
from profiles.inference import InferenceSettings, MessageRows, PreferenceInference
from profiles.messages import (
    Progress,
    check_conversation_owner,
    check_role,
    embed_missing,
    store_messages,
    stored_message,
    unembedded,
)
from profiles.models import Conversation, Feedback, Message, MessageEmbedding, PreferenceSetting, RewardHeadRow, User
from profiles.pgvector import PgvectorRetrieval
from profiles.records import FeedbackPair, ForgetReport, SearchHit, StoredMessage, StoredRewardHead, UserSummary
from profiles.transactions import (
    Transactions,
    bump_purged_generation,
    ensure_user,
    from_db_time,
    now,
    require_user,
    user_pk,
)
from profiles.validation import DEFAULT_MAX_MESSAGE_CHARS, check_not_blank, check_text_size

__all__ = [
    "DEFAULT_FORGET_WAIT_S",
    "EmbedderSpec",
    "FeedbackPair",
    "ForgetReport",
    "ProfileStore",
    "Progress",
    "SearchHit",
    "StoredMessage",
    "StoredRewardHead",
    "UserSummary",
]

_QUERY_CACHE_SIZE = 64
DEFAULT_FORGET_WAIT_S = 10.0
"""How long ``forget`` waits for other connections' read transactions to end before it reports that the deleted
pages may still be in the WAL file (and says to run ``scrub``)."""


def _rowcount(result: object) -> int:
    return cast("CursorResult[Any]", result).rowcount  # DML statements return a CursorResult


class ProfileStore:
    """The profile store. ``ProfileStore()`` opens the default database (``$PANDA_CHAT_DB`` or the per-user data
    directory); ``url`` may be any SQLAlchemy URL or a file path. The schema is migrated on open.

    ``embedder``: None for all-MiniLM-L6-v2 (loaded on first use), ``"hashing"``, a model path, an ``Embedder`` or a
    callable. ``index_path``: where the faiss cache lives (default: next to a SQLite file; in memory otherwise).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        catalog: PreferenceCatalog | None = None,
        embedder: EmbedderSpec = None,
        index_path: str | os.PathLike[str] | None = None,
        inference_settings: InferenceSettings | None = None,
        nlist: int = DEFAULT_NLIST,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        forget_wait_s: float = DEFAULT_FORGET_WAIT_S,
    ) -> None:
        if max_message_chars < 1:
            raise InvalidInputError(f"max_message_chars must be at least 1, got {max_message_chars}")
        if forget_wait_s < 0:
            raise InvalidInputError(f"forget_wait_s must be >= 0, got {forget_wait_s}")
        self.max_message_chars = max_message_chars
        self.forget_wait_s = forget_wait_s
        self.url = normalise_url(url) if url is not None else default_url()
        self.catalog = catalog or PreferenceCatalog.default()
        self.inference_settings = inference_settings or InferenceSettings()
        self._embedder_spec = embedder
        self._embedder: Embedder | None = None
        self._inference: PreferenceInference | None = None
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # a chat asks search + preferences
        self._lock = threading.RLock()  # guards the lazy embedder and the query cache (a store serves many threads)
        database_file = sqlite_file(self.url)
        if index_path is None and database_file is not None:
            index_path = database_file.with_name(database_file.name + ".faiss")
        self._engine: Engine = create_store_engine(self.url)
        upgrade_schema(self._engine)
        self._transactions = Transactions(self._engine)
        self._index_cache = IndexCache(self._transactions, Path(index_path) if index_path is not None else None, nlist)
        self._pgvector = PgvectorRetrieval(self._transactions)

    # ----------------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Save the index cache if it grew enough to be worth rewriting, and release the database."""
        self._index_cache.save_if_grown()
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def index_path(self) -> Path | None:
        """The faiss cache file (None: the cache lives in memory)."""
        return self._index_cache.path

    @property
    def embedder(self) -> Embedder:
        """The embedder, loaded on first use (opening a store to list users never loads a model)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = resolve_embedder(self._embedder_spec)
            return self._embedder

    @property
    def inference(self) -> PreferenceInference:
        with self._lock:
            if self._inference is None:
                self._inference = PreferenceInference(self.catalog, self.embedder, self.inference_settings)
            return self._inference

    def _read(self) -> AbstractContextManager[Session]:
        return self._transactions.read()

    def _write(self) -> AbstractContextManager[Session]:
        return self._transactions.write()

    def _check_size(self, text: str, what: str = "message") -> str:
        return check_text_size(text, self.max_message_chars, what)

    # --------------------------------------------------------------------------------------------------- users

    def user_key(self, user_id: str) -> int | None:
        """The user's integer key in the database (what the index and every table use), or None."""
        with self._read() as session:
            return user_pk(session, user_id)

    def has_user(self, user_id: str) -> bool:
        return self.user_key(user_id) is not None

    def create_user(self, user_id: str) -> None:
        """Create a user; ``UserExistsError`` if there is one already."""
        validate_user_id(user_id)
        with self._write() as session:
            if user_pk(session, user_id) is not None:
                raise UserExistsError(user_id)
            session.execute(insert(User).values(name=user_id, created_at=now()))

    def list_users(self) -> list[UserSummary]:
        with self._read() as session:
            rows = session.execute(
                select(User.id, User.name, User.created_at, func.count(Message.id), func.max(Message.created_at))
                .outerjoin(Message, Message.user_id == User.id)
                .group_by(User.id)
                .order_by(User.name)
            ).all()
        return [
            UserSummary(
                user_id=name,
                key=key,
                created_at=from_db_time(created),
                messages=count,
                last_message_at=from_db_time(last) if last else None,
            )
            for key, name, created, count, last in rows
        ]

    def user_id_of_key(self, key: int) -> str:
        """The id of the user with database key ``key`` (see ``UserSummary.key``)."""
        with self._read() as session:
            name = session.scalar(select(User.name).where(User.id == key))
        if name is None:
            raise UnknownUserError(f"#{key}")
        return name

    def forget(self, user_id: str, *, wait_s: float | None = None) -> ForgetReport:
        """Delete the user and everything derived from them (rows, embeddings, index entries), verify that no row
        refers to them any more, and scrub the files (see ``scrub``): only then does it return.

        The id is not validated, so an id stored before validation existed can still be forgotten. The id is also
        removed from the API keys bound to it (``key_bindings``), so it stays in no table. Deleted SQLite pages are
        zeroed (secure_delete). ``ForgetIncompleteError`` means the rows are gone but another connection's read
        transaction kept old pages in the WAL past ``wait_s`` (default ``forget_wait_s``): run ``scrub`` once it
        has ended. A write for this user that was already running (an import still embedding) is refused when it
        commits."""
        pk, deleted, generation = forget_part.delete_user(self._transactions, user_id)
        index_entries, index_file = self._index_cache.forget_user(pk, generation)
        wal = self.scrub(wait_s=wait_s, what=f"the deleted data of {user_id!r}")
        return ForgetReport(
            user_id=user_id, deleted=deleted, index_entries=index_entries, index_file=index_file, wal=wal
        )

    def scrub(self, *, wait_s: float | None = None, what: str = "deleted data") -> Literal["truncated", "none"]:
        """Move every committed change from the WAL into the database file and empty the WAL, so that deleted
        text, already zeroed in the database pages by secure_delete, survives in no file.

        A checkpoint cannot overwrite pages another connection's open read transaction may still read; it waits
        up to ``wait_s`` (default ``forget_wait_s``) for them, then raises ``ForgetIncompleteError``. Returns
        ``"none"`` for a database without a WAL file (memory, PostgreSQL)."""
        wait = self.forget_wait_s if wait_s is None else wait_s
        return forget_part.scrub(self._engine, sqlite_file(self.url), wait, what)

    # ------------------------------------------------------------------------------------------- conversations

    def new_conversation(self, user_id: str, title: str | None = None) -> int:
        """Start a conversation (creating the user when new); returns its id."""
        with self._write() as session:
            pk = ensure_user(session, user_id)
            return session.execute(
                insert(Conversation).values(user_id=pk, title=title, created_at=now()).returning(Conversation.id)
            ).scalar_one()

    def conversation_for_key(self, user_id: str, key: str, create: bool = True) -> int | None:
        """The user's conversation for an external key (a LangGraph thread id, a session id), created on first use
        (``create=False``: None when there is none).

        Keys are per user: two users' "thread-1" are two conversations, and forgetting a user takes theirs along.
        """
        if not isinstance(key, str) or not key or len(key) > 255:
            raise InvalidInputError(f"a conversation key must be a string of 1 to 255 characters, got {key!r}")
        with self._write() if create else self._read() as session:  # a write holds SQLite's lock: no twin is made
            pk = ensure_user(session, user_id) if create else user_pk(session, user_id)
            found = (
                None
                if pk is None
                else session.scalar(
                    select(Conversation.id).where(Conversation.user_id == pk, Conversation.external_key == key)
                )
            )
            if found is not None or not create:
                return found
            return session.scalar(
                insert(Conversation)
                .values(user_id=pk, title=None, created_at=now(), external_key=key)
                .returning(Conversation.id)
            )

    def conversation_keys(self, user_id: str, prefix: str = "") -> dict[int, str]:
        """The user's keyed conversations whose key starts with ``prefix``: {conversation id: key}."""
        with self._read() as session:
            pk = user_pk(session, user_id)
            if pk is None:
                return {}
            rows = session.execute(
                select(Conversation.id, Conversation.external_key).where(
                    Conversation.user_id == pk, Conversation.external_key.is_not(None)
                )
            ).all()
        return {conversation: key for conversation, key in rows if key is not None and key.startswith(prefix)}

    def delete_conversation_key(self, user_id: str, key: str) -> bool:
        """Delete the user's conversation for ``key`` with its messages and their embeddings; False when none."""
        with self._write() as session:
            pk = user_pk(session, user_id)
            if pk is None:
                return False
            deleted = _rowcount(
                session.execute(
                    delete(Conversation).where(Conversation.user_id == pk, Conversation.external_key == key)
                )
            )
            if deleted:  # the index cache is rebuilt without the deleted vectors on its next use
                bump_purged_generation(session)
        return bool(deleted)

    # ------------------------------------------------------------------------------------------------ messages

    def add_message(
        self,
        user_id: str,
        role: str,
        text: str,
        conversation_id: int | None = None,
        created_at: datetime | None = None,
    ) -> StoredMessage:
        """Store and embed one message (creating the user, and a conversation when ``conversation_id`` is None)."""
        return self.add_messages(user_id, [(role, text, created_at)], conversation_id=conversation_id)[0]

    def add_messages(
        self,
        user_id: str,
        messages: Sequence[tuple[str, str, datetime | None]],
        *,
        conversation_id: int | None = None,
        progress: Progress | None = None,
    ) -> list[StoredMessage]:
        """Store ``(role, text, created_at)`` messages in one conversation, atomically, embedding them in batches."""
        lines = [
            HistoryLine(role=check_role(role), text=self._check_size(check_not_blank(text)), created_at=created_at)
            for role, text, created_at in messages
        ]
        return store_messages(
            self._transactions, self.embedder, user_id, lines, conversation_id=conversation_id, progress=progress
        )

    def import_history(
        self, user_id: str, lines: Sequence[HistoryLine], *, progress: Progress | None = None
    ) -> list[StoredMessage]:
        """Store parsed history lines (see ``profiles.exchange``) atomically: all of them or, on error, none."""
        for number, line in enumerate(lines, start=1):
            self._check_size(line.text, f"message {number}")
        return store_messages(
            self._transactions, self.embedder, user_id, list(lines), conversation_id=None, progress=progress
        )

    def conversation_messages(self, conversation_id: int, user_id: str | None = None) -> list[StoredMessage]:
        """A conversation's messages in order (empty for an unknown conversation). With ``user_id``, only that
        user's: another user's conversation, or none, is an ``InvalidInputError``, as when writing to it (a caller
        given a conversation id by a client must not read, or reveal anything about, another user's turns)."""
        with self._read() as session:
            if user_id is not None:
                check_conversation_owner(session, conversation_id, user_id, user_pk(session, user_id))
            rows = session.execute(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.created_at, Message.id)
            ).scalars()
            return [stored_message(message) for message in rows]

    def messages(self, user_id: str, *, limit: int | None = None) -> list[StoredMessage]:
        """A user's messages, oldest first (the ``limit`` most recent ones when given)."""
        with self._read() as session:
            pk = require_user(session, user_id)
            query = select(Message).where(Message.user_id == pk).order_by(Message.created_at.desc(), Message.id.desc())
            if limit is not None:
                query = query.limit(limit)
            return [stored_message(message) for message in reversed(session.execute(query).scalars().all())]

    # ----------------------------------------------------------------------------------------------- retrieval

    def search(self, user_id: str, query: str, k: int = 5) -> list[SearchHit]:
        """The user's ``k`` past messages most similar to ``query`` (never another user's); empty for an unknown
        user."""
        check_not_blank(query, "query")
        pk = embed_missing(self._transactions, self.embedder, user_id)
        return [] if pk is None else self._search_vector(pk, self._query_vector(query), k)

    def _query_vector(self, query: str) -> np.ndarray:
        """The query's vector, from a small per-store cache: a chat turn embeds its prompt once for both
        ``search`` and ``preferences``."""
        with self._lock:
            vector = self._query_vectors.get(query)
            if vector is not None:
                self._query_vectors.move_to_end(query)
                return vector
        vector = encode_normalised(self.embedder, [query])[0]
        with self._lock:
            self._query_vectors[query] = vector
            if len(self._query_vectors) > _QUERY_CACHE_SIZE:
                self._query_vectors.popitem(last=False)
        return vector

    def search_vector(self, user_id: str, vector: np.ndarray, k: int = 5) -> list[SearchHit]:
        """``search`` with an already embedded (normalised) query."""
        pk = self.user_key(user_id)
        return [] if pk is None else self._search_vector(pk, vector, k)

    def _search_vector(self, pk: int, vector: np.ndarray, k: int) -> list[SearchHit]:
        embedder = self.embedder
        if self._pgvector.available():
            scored = self._pgvector.search(embedder.name, pk, vector, k)
        else:
            scored = self._index_cache.search(embedder, pk, vector, k)
        if not scored:
            return []
        with self._read() as session:
            rows = {
                message.id: message
                for message in session.execute(
                    select(Message).where(Message.user_id == pk, Message.id.in_([m for m, _ in scored]))
                ).scalars()
            }
        return [
            SearchHit(
                message_id=message_id,
                conversation_id=rows[message_id].conversation_id,
                role=rows[message_id].role,
                text=rows[message_id].text,
                score=score,
                created_at=from_db_time(rows[message_id].created_at),
            )
            for message_id, score in scored
            if message_id in rows
        ]

    def rebuild_index(self) -> EmbeddingIndex:
        """Rebuild the faiss cache from the stored vectors and save it."""
        return self._index_cache.rebuild(self.embedder)

    # ---------------------------------------------------------------------------------------------- inference

    def preferences(self, user_id: str, query: str | None = None) -> PreferenceContext:
        """The user's preference context (for ``query``, when given: evidence related to it counts more).
        A user with no history, or an unknown user, gets the neutral context (confidence 0)."""
        embedder = self.embedder
        with self._read() as session:  # one read in the common case: every message already has its vector
            pk = user_pk(session, user_id)
            lacking = pk is not None and bool(unembedded(session, pk, embedder, first_only=True))
            evidence = None if pk is None or lacking else self._evidence(session, pk, embedder)
        if lacking:  # the embedder was switched since some messages were stored: embed them first
            pk = embed_missing(self._transactions, embedder, user_id)
            if pk is not None:
                with self._read() as session:
                    evidence = self._evidence(session, pk, embedder)
        if pk is None or evidence is None:
            return PreferenceContext.neutral(self.catalog, user_id, query)
        rows, feedback, explicit = evidence
        if rows:
            messages = MessageRows(
                ids=np.fromiter((row.id for row in rows), np.int64, len(rows)),
                times=np.fromiter((as_utc(row.created_at).timestamp() for row in rows), np.float64, len(rows)),
                vectors=np.frombuffer(b"".join(row.vector for row in rows), np.float32).reshape(len(rows), -1),
            )
        else:
            messages = MessageRows.empty(embedder.dim)
        return self.inference.infer(
            user_id,
            messages,
            feedback=feedback_part.inference_rows(feedback, embedder),
            explicit={dimension: pole for dimension, pole in explicit.items() if dimension in self.catalog.names},
            query=query,
            query_vector=self._query_vector(query) if query else None,
            texts=lambda ids: self._texts(pk, ids),
        )

    def _evidence(
        self, session: Session, pk: int, embedder: Embedder
    ) -> tuple[list[Any], list[Feedback], dict[str, str]]:
        """What inference reads about a user: their latest messages' vectors, their feedback, their settings."""
        rows = session.execute(
            _EVIDENCE_MESSAGES, {"pk": pk, "embedder": embedder.name, "limit": self.inference_settings.max_messages}
        )
        feedback = list(session.execute(_USER_FEEDBACK, {"pk": pk}).scalars())
        return list(rows), feedback, _explicit(session, pk)

    def _texts(self, pk: int, message_ids: list[int]) -> dict[int, str]:
        with self._read() as session:
            return {row.id: row.text for row in session.execute(_MESSAGE_TEXTS, {"pk": pk, "ids": message_ids})}

    # ---------------------------------------------------------------------------------------- explicit settings

    def set_preference(self, user_id: str, dimension: str, pole: str) -> None:
        """Set ``dimension = pole`` explicitly (creating the user when new); it overrides inference."""
        self.catalog.dimension(dimension).pole(pole)
        with self._write() as session:
            pk = ensure_user(session, user_id)
            session.execute(
                delete(PreferenceSetting).where(
                    PreferenceSetting.user_id == pk, PreferenceSetting.dimension == dimension
                )
            )
            session.execute(
                insert(PreferenceSetting).values(user_id=pk, dimension=dimension, pole=pole, updated_at=now())
            )

    def unset_preference(self, user_id: str, dimension: str) -> bool:
        """Remove an explicit setting; returns whether there was one."""
        self.catalog.dimension(dimension)
        with self._write() as session:
            pk = require_user(session, user_id)
            return bool(
                _rowcount(
                    session.execute(
                        delete(PreferenceSetting).where(
                            PreferenceSetting.user_id == pk, PreferenceSetting.dimension == dimension
                        )
                    )
                )
            )

    def explicit_preferences(self, user_id: str) -> dict[str, str]:
        with self._read() as session:
            return _explicit(session, require_user(session, user_id))

    # ------------------------------------------------------------------------------------------------ feedback

    def add_feedback(
        self,
        user_id: str,
        *,
        prompt: str,
        response: str | None = None,
        rating: float | None = None,
        chosen: str | None = None,
        rejected: str | None = None,
        message_id: int | None = None,
    ) -> int:
        """Record a rating in [-1, 1] of ``response`` (or of message ``message_id``), or a ``chosen`` over
        ``rejected`` pair. Returns the feedback id. Feedback moves the inferred preferences. The rules are
        ``profiles.validation.FeedbackInput``, the same for the CLI and import files."""
        return feedback_part.record_feedback(
            self._transactions,
            self.embedder,
            user_id,
            prompt=prompt,
            response=response,
            rating=rating,
            chosen=chosen,
            rejected=rejected,
            message_id=message_id,
            max_chars=self.max_message_chars,
        )

    def feedback_pairs(self, user_id: str) -> list[FeedbackPair]:
        """Preference pairs for training a per-user reward: every chosen/rejected pair, plus, for ratings of the
        same prompt, each better-rated response over each worse-rated one."""
        return feedback_part.feedback_pairs(self._transactions, user_id)

    # ------------------------------------------------------------------------------------------- reward heads

    def save_reward_head(
        self,
        user_id: str,
        name: str,
        data: bytes,
        meta: dict[str, Any] | None = None,
        *,
        expected_key: int | None = None,
    ) -> None:
        """Store (or replace) a learned reward head for the user. ``expected_key``: the user's ``user_key`` read
        before the head was trained; when the user has been forgotten since, ``UserForgottenError`` and nothing is
        stored (training takes minutes: a forget meanwhile must not be undone)."""
        check_not_blank(name, "reward head name")
        with self._write() as session:
            pk = ensure_user(session, user_id, expected_key)
            session.execute(delete(RewardHeadRow).where(RewardHeadRow.user_id == pk, RewardHeadRow.name == name))
            session.execute(
                insert(RewardHeadRow).values(
                    user_id=pk, name=name, data=bytes(data), meta=dict(meta or {}), created_at=now()
                )
            )

    def reward_heads(self, user_id: str) -> list[StoredRewardHead]:
        with self._read() as session:
            pk = user_pk(session, user_id)
            if pk is None:
                return []
            heads = session.execute(_REWARD_HEADS, {"pk": pk})
            return [
                StoredRewardHead(
                    name=head.name, data=head.data, meta=head.meta, created_at=from_db_time(head.created_at)
                )
                for head in heads
            ]

    def delete_reward_head(self, user_id: str, name: str) -> bool:
        with self._write() as session:
            pk = require_user(session, user_id)
            return bool(
                _rowcount(
                    session.execute(
                        delete(RewardHeadRow).where(RewardHeadRow.user_id == pk, RewardHeadRow.name == name)
                    )
                )
            )

    # --------------------------------------------------------------------------------------- export / import

    def export_user(self, user_id: str) -> ProfileExport:
        """Everything stored about the user, in the versioned export format (see ``profiles.exchange``)."""
        return export_user(self._transactions, user_id)

    def import_user(self, data: ProfileExport, *, user_id: str | None = None, progress: Progress | None = None) -> str:
        """Create a user from an export (as ``user_id`` when given), atomically. Refuses an existing user and
        settings the catalog does not know. Returns the user id."""
        return import_user(
            self._transactions,
            self.embedder,
            self.catalog,
            data,
            user_id=user_id,
            max_chars=self.max_message_chars,
            progress=progress,
        )


# What a chat call reads, built once (Core statements and bound parameters, see ``profiles.transactions``).
_MESSAGES, _EMBEDDINGS, _SETTINGS = Message.__table__, MessageEmbedding.__table__, PreferenceSetting.__table__
_EVIDENCE_MESSAGES = (
    select(_MESSAGES.c.id, _MESSAGES.c.created_at, _EMBEDDINGS.c.vector)
    .join(
        _EMBEDDINGS,
        (_EMBEDDINGS.c.message_id == _MESSAGES.c.id) & (_EMBEDDINGS.c.embedder == bindparam("embedder")),
    )
    .where(_MESSAGES.c.user_id == bindparam("pk"), _MESSAGES.c.role == "user")
    .order_by(_MESSAGES.c.created_at.desc())
    .limit(bindparam("limit"))
)
_MESSAGE_TEXTS = select(_MESSAGES.c.id, _MESSAGES.c.text).where(
    _MESSAGES.c.user_id == bindparam("pk"), _MESSAGES.c.id.in_(bindparam("ids", expanding=True))
)
_USER_FEEDBACK = select(Feedback).where(Feedback.user_id == bindparam("pk"))
_EXPLICIT = (
    select(_SETTINGS.c.dimension, _SETTINGS.c.pole)
    .where(_SETTINGS.c.user_id == bindparam("pk"))
    .order_by(_SETTINGS.c.dimension)
)
_REWARD_HEADS = (
    select(RewardHeadRow.__table__)
    .where(RewardHeadRow.__table__.c.user_id == bindparam("pk"))
    .order_by(RewardHeadRow.__table__.c.name)
)


def _explicit(session: Session, pk: int) -> dict[str, str]:
    """The user's explicit settings, ``{dimension: pole}``, by dimension."""
    return {row.dimension: row.pole for row in session.execute(_EXPLICIT, {"pk": pk})}
