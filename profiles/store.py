"""``ProfileStore``: each user's conversation history, feedback and settings, and what is inferred from them.

SQLite (or any SQLAlchemy database) is the source of truth. Messages are embedded when stored, in batches and
outside the write transaction (so the write lock is held for milliseconds, not for a model forward). Retrieval goes
through an ``EmbeddingIndex`` (faiss), a cache kept next to a SQLite file and checked against the database's
generation counters before every search: it is caught up from the rows written since, or rebuilt when it is
missing, corrupt, foreign, or when rows were deleted since it was written.

Every query path is scoped to one user: the index only scans that user's id range, and texts are fetched with
``WHERE user_id = :user``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self, cast

import numpy as np
from pydantic import BaseModel, ConfigDict
from sqlalchemy import CursorResult, Engine, delete, func, insert, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from profiles.catalog import PreferenceCatalog
from profiles.context import PreferenceContext
from profiles.database import (
    BUSY_TIMEOUT_MS,
    WRITE_OPTIONS,
    create_store_engine,
    default_url,
    normalise_url,
    sqlite_file,
    upgrade_schema,
)
from profiles.embedders import Embedder, encode_normalised, resolve_embedder
from profiles.errors import (
    ForgetIncompleteError,
    InvalidInputError,
    ProfileError,
    UnknownUserError,
    UserExistsError,
    UserForgottenError,
)
from profiles.exchange import (
    ExportedConversation,
    ExportedFeedback,
    ExportedMessage,
    ExportedRewardHead,
    ExportedSetting,
    HistoryLine,
    ProfileExport,
    as_utc,
)
from profiles.ids import validate_user_id
from profiles.index import DEFAULT_NLIST, EmbeddingIndex, IndexHeader
from profiles.inference import FeedbackRow, InferenceSettings, MessageRows, PreferenceInference
from profiles.models import (
    ROLES,
    ApiKey,
    Conversation,
    Feedback,
    Message,
    MessageEmbedding,
    PreferenceSetting,
    RewardHead,
    StoreState,
    User,
)
from profiles.validation import DEFAULT_MAX_MESSAGE_CHARS, check_text_size, feedback_input

EmbedderSpec = Embedder | Callable[[list[str]], object] | str | os.PathLike[str] | None
Progress = Callable[[int], None]
_EMBED_BATCH = 256
_QUERY_CACHE_SIZE = 64
# The index file is rewritten on close only when this many vectors (or 5% of it) were added since it was read:
# smaller gaps are cheaper to catch up from SQLite on the next open than to rewrite a large file every time.
_RESAVE_MIN_VECTORS = 1000
DEFAULT_FORGET_WAIT_S = 10.0
"""How long ``forget`` waits for other connections' read transactions to end before it reports that the deleted
pages may still be in the WAL file (and says to run ``scrub``)."""


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


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _to_db_time(value: datetime | None) -> datetime:
    """Naive UTC, as stored; ``None`` is now."""
    return _now() if value is None else as_utc(value).replace(tzinfo=None)


def _from_db_time(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form of a float32 vector (each value exactly, as Python writes floats)."""
    return "[" + ",".join(repr(float(value)) for value in vector) + "]"


def _check_text(text: str, what: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"{what} is empty; give some text")
    return text


class _Unset:
    pass


_UNSEEN = _Unset()  # "the caller did not look the user up before the write" (see ``_ensure_user``)


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
    return role


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
        self._index: EmbeddingIndex | None = None
        self._nlist = nlist
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # a chat asks search + preferences
        self._lock = threading.RLock()  # guards the index and the query cache (a store may serve many threads)
        self._pgvector: bool | None = None  # retrieval in SQL (PostgreSQL with pgvector), decided on first search
        self._hnsw_dims: set[int] = set()
        database_file = sqlite_file(self.url)
        if index_path is not None:
            self.index_path: Path | None = Path(index_path)
        else:
            self.index_path = database_file.with_name(database_file.name + ".faiss") if database_file else None
        self._engine: Engine = create_store_engine(self.url)
        self._write_engine = self._engine.execution_options(**WRITE_OPTIONS)
        upgrade_schema(self._engine)

    # ----------------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Save the index cache if it grew enough to be worth rewriting, and release the database."""
        with self._lock:
            index = self._index
            if (
                index is not None
                and self.index_path is not None
                and index.unsaved_vectors >= max(_RESAVE_MIN_VECTORS, index.ntotal // 20)
            ):
                with self._read() as session:
                    state = session.get_one(StoreState, 1)
                # Never write back vectors of a user another process has forgotten since this index was built.
                if index.generation >= state.purged_generation:
                    index.save(self.index_path)
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction: all or nothing, holding SQLite's write lock from its start."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    # --------------------------------------------------------------------------------------------------- users

    def _user_pk(self, session: Session, user_id: str) -> int | None:
        return session.scalar(select(User.id).where(User.name == user_id))

    def _require_user(self, session: Session, user_id: str) -> int:
        pk = self._user_pk(session, user_id)
        if pk is None:
            raise UnknownUserError(user_id)
        return pk

    def _ensure_user(self, session: Session, user_id: str, seen: int | _Unset | None = _UNSEEN) -> int:
        """The user's key inside a write transaction, creating a new user. ``seen`` is the key the caller read
        before slow work outside the transaction (embedding): when the user has been forgotten since (the key is
        gone or belongs to a re-created user), the write is refused, so a forget cannot be undone by a write that
        was already running. Keys are never reused (AUTOINCREMENT)."""
        pk = self._user_pk(session, user_id)
        if not isinstance(seen, _Unset) and seen is not None and pk != seen:
            raise UserForgottenError(user_id)
        if pk is None:
            validate_user_id(user_id)
            pk = session.execute(insert(User).values(name=user_id, created_at=_now()).returning(User.id)).scalar_one()
        return pk

    def _check_size(self, text: str, what: str = "message") -> str:
        return check_text_size(text, self.max_message_chars, what)

    def user_key(self, user_id: str) -> int | None:
        """The user's integer key in the database (what the index and every table use), or None."""
        with self._read() as session:
            return self._user_pk(session, user_id)

    def has_user(self, user_id: str) -> bool:
        with self._read() as session:
            return self._user_pk(session, user_id) is not None

    def create_user(self, user_id: str) -> None:
        """Create a user; ``UserExistsError`` if there is one already."""
        validate_user_id(user_id)
        with self._write() as session:
            if self._user_pk(session, user_id) is not None:
                raise UserExistsError(user_id)
            session.execute(insert(User).values(name=user_id, created_at=_now()))

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
                created_at=_from_db_time(created),
                messages=count,
                last_message_at=_from_db_time(last) if last else None,
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
        owned: dict[str, type[Conversation | Message | MessageEmbedding | Feedback | PreferenceSetting | RewardHead]]
        owned = {
            "conversations": Conversation,
            "messages": Message,
            "embeddings": MessageEmbedding,
            "feedback": Feedback,
            "preferences": PreferenceSetting,
            "reward_heads": RewardHead,
        }
        with self._write() as session:
            pk = self._require_user(session, user_id)
            deleted: dict[str, int] = {
                name: session.scalar(select(func.count()).select_from(model).where(model.user_id == pk)) or 0
                for name, model in owned.items()
            }
            session.execute(delete(User).where(User.id == pk))
            leftovers = {
                name: session.scalar(select(func.count()).select_from(model).where(model.user_id == pk))
                for name, model in owned.items()
            }
            if any(leftovers.values()):  # foreign keys off (another tool's connection?): refuse, roll back
                raise ProfileError(f"forgetting {user_id!r} left rows behind {leftovers}; nothing was deleted")
            deleted["key_bindings"] = 0
            for key in session.scalars(select(ApiKey)).all():  # a handful of rows: the server's keys
                if user_id in key.users:
                    key.users = [user for user in key.users if user != user_id]
                    deleted["key_bindings"] += 1
            generation = self._bump_generation(session)
            session.execute(update(StoreState).where(StoreState.id == 1).values(purged_generation=generation))
        with self._lock:
            index_entries, index_file = self._forget_in_index(pk, generation)
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
        database = sqlite_file(self.url)
        if database is None:
            return "none"
        wait = self.forget_wait_s if wait_s is None else wait_s
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
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
                f"for more than {wait:g} s; close the other programs using {database.name}, then run "
                f"`panda-chat profile scrub` (ProfileStore.scrub())"
            )
        return "truncated"

    def _forget_in_index(self, user_pk: int, generation: int) -> tuple[int, Literal["rewritten", "deleted", "none"]]:
        """Drop the user's vectors from the loaded index and rewrite its file; a file this process has not loaded
        (or one that other writers made stale meanwhile) is deleted, to be rebuilt without the user."""
        index, path = self._index, self.index_path
        removed = index.remove_user(user_pk) if index is not None else 0
        if index is not None and index.count_user(user_pk):
            raise ProfileError(f"the index cache still holds vectors of user key {user_pk} after removing them")
        if index is not None and index.generation == generation - 1:
            index.mark_generation(generation)
            if path is None:
                return removed, "none"
            index.save(path)
            return removed, "rewritten"
        self._index = None
        if path is None or not path.exists():
            return removed, "none"
        path.unlink()
        return removed, "deleted"

    # ------------------------------------------------------------------------------------------------ messages

    def new_conversation(self, user_id: str, title: str | None = None) -> int:
        """Start a conversation (creating the user when new); returns its id."""
        with self._write() as session:
            pk = self._ensure_user(session, user_id)
            return session.execute(
                insert(Conversation).values(user_id=pk, title=title, created_at=_now()).returning(Conversation.id)
            ).scalar_one()

    # ------------------------------------------------------------------- conversations keyed by a caller's own id

    def conversation_for_key(self, user_id: str, key: str, create: bool = True) -> int | None:
        """The user's conversation for an external key (a LangGraph thread id, a session id), created on first use
        (``create=False``: None when there is none).

        Keys are per user: two users' "thread-1" are two conversations, and forgetting a user takes theirs along.
        """
        if not isinstance(key, str) or not key or len(key) > 255:
            raise InvalidInputError(f"a conversation key must be a string of 1 to 255 characters, got {key!r}")
        with self._write() if create else self._read() as session:  # a write holds SQLite's lock: no twin is made
            pk = self._ensure_user(session, user_id) if create else self._user_pk(session, user_id)
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
                .values(user_id=pk, title=None, created_at=_now(), external_key=key)
                .returning(Conversation.id)
            )

    def conversation_keys(self, user_id: str, prefix: str = "") -> dict[int, str]:
        """The user's keyed conversations whose key starts with ``prefix``: {conversation id: key}."""
        with self._read() as session:
            pk = self._user_pk(session, user_id)
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
            pk = self._user_pk(session, user_id)
            if pk is None:
                return False
            result = session.execute(
                delete(Conversation).where(Conversation.user_id == pk, Conversation.external_key == key)
            )
            deleted = cast("CursorResult[Any]", result).rowcount  # DML statements return a CursorResult
            if deleted:  # the index cache is rebuilt without the deleted vectors on its next use
                generation = self._bump_generation(session)
                session.execute(update(StoreState).where(StoreState.id == 1).values(purged_generation=generation))
        return bool(deleted)

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
            HistoryLine(role=_check_role(role), text=self._check_size(_check_text(text)), created_at=created_at)
            for role, text, created_at in messages
        ]
        return self._store_messages(user_id, lines, conversation_id=conversation_id, progress=progress)

    def import_history(
        self, user_id: str, lines: Sequence[HistoryLine], *, progress: Progress | None = None
    ) -> list[StoredMessage]:
        """Store parsed history lines (see ``profiles.exchange``) atomically: all of them or, on error, none."""
        for number, line in enumerate(lines, start=1):
            self._check_size(line.text, f"message {number}")
        return self._store_messages(user_id, list(lines), conversation_id=None, progress=progress)

    def _embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), _EMBED_BATCH):
            batch = texts[start : start + _EMBED_BATCH]
            chunks.append(encode_normalised(self.embedder, batch))
            if progress is not None:
                progress(len(batch))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embedder.dim), np.float32)

    def _store_messages(
        self, user_id: str, lines: list[HistoryLine], *, conversation_id: int | None, progress: Progress | None
    ) -> list[StoredMessage]:
        if not lines:
            return []
        seen = self.user_key(user_id)
        vectors = self._embed([line.text for line in lines], progress)
        embedder = self.embedder
        with self._write() as session:
            pk = self._ensure_user(session, user_id, seen)
            conversations: dict[str | None, int] = {}
            if conversation_id is not None:
                owner = session.scalar(select(Conversation.user_id).where(Conversation.id == conversation_id))
                if owner != pk:
                    raise InvalidInputError(f"conversation {conversation_id} does not belong to user {user_id!r}")
            rows: list[dict[str, Any]] = []
            for line in lines:
                if conversation_id is not None:
                    conversation = conversation_id
                elif line.conversation in conversations:
                    conversation = conversations[line.conversation]
                else:
                    conversation = session.execute(
                        insert(Conversation)
                        .values(user_id=pk, title=line.conversation, created_at=_to_db_time(line.created_at))
                        .returning(Conversation.id)
                    ).scalar_one()
                    conversations[line.conversation] = conversation
                rows.append(
                    {
                        "conversation_id": conversation,
                        "user_id": pk,
                        "role": line.role,
                        "text": line.text,
                        "created_at": _to_db_time(line.created_at),
                    }
                )
            ids = list(session.scalars(insert(Message).returning(Message.id, sort_by_parameter_order=True), rows))
            generation = self._bump_generation(session)
            session.execute(
                insert(MessageEmbedding),
                [
                    {
                        "message_id": message_id,
                        "embedder": embedder.name,
                        "user_id": pk,
                        "dim": embedder.dim,
                        "vector": vector.tobytes(),
                        "generation": generation,
                    }
                    for message_id, vector in zip(ids, vectors, strict=True)
                ],
            )
        return [
            StoredMessage(
                message_id=message_id,
                conversation_id=row["conversation_id"],
                role=row["role"],
                text=row["text"],
                created_at=_from_db_time(row["created_at"]),
            )
            for message_id, row in zip(ids, rows, strict=True)
        ]

    def conversation_messages(self, conversation_id: int) -> list[StoredMessage]:
        """A conversation's messages in order (empty for an unknown conversation)."""
        with self._read() as session:
            rows = (
                session.execute(
                    select(Message)
                    .where(Message.conversation_id == conversation_id)
                    .order_by(Message.created_at, Message.id)
                )
                .scalars()
                .all()
            )
            return [self._stored(message) for message in rows]

    def messages(self, user_id: str, *, limit: int | None = None) -> list[StoredMessage]:
        """A user's messages, oldest first (the ``limit`` most recent ones when given)."""
        with self._read() as session:
            pk = self._require_user(session, user_id)
            query = select(Message).where(Message.user_id == pk).order_by(Message.created_at.desc(), Message.id.desc())
            if limit is not None:
                query = query.limit(limit)
            return [self._stored(message) for message in reversed(session.execute(query).scalars().all())]

    @staticmethod
    def _stored(message: Message) -> StoredMessage:
        return StoredMessage(
            message_id=message.id,
            conversation_id=message.conversation_id,
            role=message.role,
            text=message.text,
            created_at=_from_db_time(message.created_at),
        )

    # ----------------------------------------------------------------------------------------------- retrieval

    def search(self, user_id: str, query: str, k: int = 5) -> list[SearchHit]:
        """The user's ``k`` past messages most similar to ``query`` (never another user's); empty for an unknown
        user."""
        _check_text(query, "query")
        pk = self._user_with_embeddings(user_id)
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
        with self._read() as session:
            pk = self._user_pk(session, user_id)
        return [] if pk is None else self._search_vector(pk, vector, k)

    def _search_vector(self, user_pk: int, vector: np.ndarray, k: int) -> list[SearchHit]:
        if self._uses_pgvector():
            scored = self._pgvector_search(user_pk, vector, k)
        else:
            with self._lock:
                scored = self._synced_index().search(user_pk, vector, k)
        if not scored:
            return []
        with self._read() as session:
            rows = {
                message.id: message
                for message in session.execute(
                    select(Message).where(Message.user_id == user_pk, Message.id.in_([m for m, _ in scored]))
                ).scalars()
            }
        return [
            SearchHit(
                message_id=message_id,
                conversation_id=rows[message_id].conversation_id,
                role=rows[message_id].role,
                text=rows[message_id].text,
                score=score,
                created_at=_from_db_time(rows[message_id].created_at),
            )
            for message_id, score in scored
            if message_id in rows
        ]

    def _uses_pgvector(self) -> bool:
        """PostgreSQL with the ``vector`` column (migration 0004, when the extension is available): retrieval runs
        in SQL there, shared by every server on the database; SQLite (and a PostgreSQL without pgvector) uses faiss."""
        if self._pgvector is None:
            self._pgvector = (
                self._engine.dialect.name == "postgresql"
                and self._read_scalar(
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'message_embeddings' AND column_name = 'embedding'"
                )
                > 0
            )
        return self._pgvector

    def _read_scalar(self, sql: str, **params: Any) -> Any:
        with self._read() as session:
            return session.scalar(sql_text(sql), params)

    def _pgvector_search(self, user_pk: int, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The user's ``k`` nearest messages by inner product (vectors are normalised: cosine), in one SQL query
        filtered by user. The float32 bytes stay the source of truth: the user's rows not yet copied into the
        ``embedding`` column (written since the last search, by any process) are copied first."""
        name, dim = self.embedder.name, int(vector.shape[0])
        with self._read() as session:
            unsynced = session.execute(
                sql_text(
                    "SELECT message_id, vector FROM message_embeddings "
                    "WHERE user_id = :user AND embedder = :embedder AND embedding IS NULL"
                ),
                {"user": user_pk, "embedder": name},
            ).all()
        if unsynced:
            with self._write() as session:
                session.execute(
                    sql_text(
                        "UPDATE message_embeddings SET embedding = CAST(:vector AS vector) "
                        "WHERE message_id = :message AND embedder = :embedder AND embedding IS NULL"
                    ),
                    [
                        {
                            "message": message,
                            "embedder": name,
                            "vector": _vector_literal(np.frombuffer(data, np.float32)),
                        }
                        for message, data in unsynced
                    ],
                )
        self._ensure_hnsw_index(dim)
        distance = f"(embedding::vector({dim})) <#> CAST(:query AS vector({dim}))"  # the negated inner product
        where = f"user_id = :user AND embedder = :embedder AND dim = {dim} AND embedding IS NOT NULL"
        params = {"user": user_pk, "embedder": name, "query": _vector_literal(vector), "k": k}
        with self._read() as session:
            session.execute(sql_text(f"SET LOCAL hnsw.ef_search = {min(1000, max(40, 4 * k))}"))
            rows = session.execute(
                sql_text(
                    f"SELECT message_id, -({distance}) FROM message_embeddings WHERE {where} "
                    f"ORDER BY {distance} LIMIT :k"
                ),
                params,
            ).all()
            # The HNSW index is filtered after its scan: for a user with few rows among many it can return fewer
            # than k of them. Then the user's rows are ranked exactly (the "+ 0" keeps the planner off the index).
            if len(rows) < k and session.scalar(
                sql_text(f"SELECT count(*) FROM message_embeddings WHERE {where}"), params
            ) > len(rows):
                rows = session.execute(
                    sql_text(
                        f"SELECT message_id, -({distance}) FROM message_embeddings WHERE {where} "
                        f"ORDER BY ({distance}) + 0 LIMIT :k"
                    ),
                    params,
                ).all()
        return [(int(message), float(score)) for message, score in rows]

    def _ensure_hnsw_index(self, dim: int) -> None:
        """One HNSW index per embedding width (a partial expression index: one column holds every embedder's
        vectors), created on first use; pgvector indexes at most 2000 dimensions, wider vectors are scanned."""
        if dim in self._hnsw_dims or dim > 2000:
            return
        try:
            with self._engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    f"CREATE INDEX IF NOT EXISTS ix_message_embeddings_hnsw_{dim} ON message_embeddings "
                    f"USING hnsw ((embedding::vector({dim})) vector_ip_ops) WHERE dim = {dim}"
                )
        except DBAPIError:  # another process created it at the same moment
            if not self._read_scalar(
                "SELECT count(*) FROM pg_indexes WHERE indexname = :name", name=f"ix_message_embeddings_hnsw_{dim}"
            ):
                raise
        self._hnsw_dims.add(dim)

    def _user_with_embeddings(self, user_id: str) -> int | None:
        """The user's key (None when unknown), after embedding any of their messages that lack a vector under the
        current embedder (after switching embedders, say; usually there are none). One read in the common case."""
        embedder = self.embedder
        with self._read() as session:
            pk = self._user_pk(session, user_id)
            if pk is None:
                return None
            missing = session.execute(
                select(Message.id, Message.text).where(
                    Message.user_id == pk,
                    ~select(MessageEmbedding.message_id)
                    .where(MessageEmbedding.message_id == Message.id, MessageEmbedding.embedder == embedder.name)
                    .exists(),
                )
            ).all()
        if not missing:
            return pk
        vectors = self._embed([row.text for row in missing])
        with self._write() as session:
            if self._user_pk(session, user_id) != pk:  # forgotten meanwhile: store nothing of theirs
                return None
            generation = self._bump_generation(session)
            session.execute(
                insert(MessageEmbedding).prefix_with("OR IGNORE", dialect="sqlite"),
                [
                    {
                        "message_id": row.id,
                        "embedder": embedder.name,
                        "user_id": pk,
                        "dim": embedder.dim,
                        "vector": vector.tobytes(),
                        "generation": generation,
                    }
                    for row, vector in zip(missing, vectors, strict=True)
                ],
            )
        return pk

    @staticmethod
    def _bump_generation(session: Session) -> int:
        session.execute(update(StoreState).where(StoreState.id == 1).values(generation=StoreState.generation + 1))
        return session.execute(select(StoreState.generation).where(StoreState.id == 1)).scalar_one()

    def _synced_index(self) -> EmbeddingIndex:
        """The index, brought up to the database's generation: loaded from its file if that is intact and ours,
        caught up from newer rows, or rebuilt."""
        embedder = self.embedder
        with self._read() as session:
            state = session.get_one(StoreState, 1)
            expected = IndexHeader(
                store_uuid=state.store_uuid,
                embedder=embedder.name,
                dim=embedder.dim,
                nlist=self._nlist,
                generation=state.generation,
            )
            if self._index is None and self.index_path is not None:
                self._index = EmbeddingIndex.load(self.index_path, expected)
            index = self._index
            stale = (
                index is None
                or index.header.model_copy(update={"generation": state.generation}) != expected
                or index.generation < state.purged_generation
                or index.generation > state.generation
            )
            if index is not None and not stale and index.generation < state.generation:
                self._add_rows(index, session, MessageEmbedding.generation > index.generation)
                index.mark_generation(state.generation)
        return self.rebuild_index() if stale or index is None else index

    def rebuild_index(self) -> EmbeddingIndex:
        """Rebuild the faiss cache from the stored vectors and save it."""
        with self._lock:
            embedder = self.embedder
            with self._read() as session:
                state = session.get_one(StoreState, 1)
                index = EmbeddingIndex(
                    IndexHeader(
                        store_uuid=state.store_uuid,
                        embedder=embedder.name,
                        dim=embedder.dim,
                        nlist=self._nlist,
                        generation=state.generation,
                    )
                )
                self._add_rows(index, session, MessageEmbedding.generation <= state.generation)
            if self.index_path is not None:
                index.save(self.index_path)
            self._index = index
            return index

    def _add_rows(self, index: EmbeddingIndex, session: Session, condition: Any) -> None:
        """Stream stored vectors into the index in chunks (Core rows, not ORM objects: this reads millions)."""
        result = (
            session.connection()
            .execution_options(yield_per=50_000)
            .execute(
                select(MessageEmbedding.user_id, MessageEmbedding.message_id, MessageEmbedding.vector).where(
                    MessageEmbedding.embedder == index.header.embedder, condition
                )
            )
        )
        for chunk in result.partitions():
            users, messages, vectors = zip(*chunk, strict=True)
            index.add(
                np.array(users, np.int64),
                np.array(messages, np.int64),
                np.frombuffer(b"".join(vectors), np.float32).reshape(len(chunk), -1),
            )

    # ---------------------------------------------------------------------------------------------- inference

    def preferences(self, user_id: str, query: str | None = None) -> PreferenceContext:
        """The user's preference context (for ``query``, when given: evidence related to it counts more).
        A user with no history, or an unknown user, gets the neutral context (confidence 0)."""
        pk = self._user_with_embeddings(user_id)
        if pk is None:
            return PreferenceContext.neutral(self.catalog, user_id, query)
        embedder = self.embedder
        limit = self.inference_settings.max_messages
        with self._read() as session:
            rows = session.execute(
                select(Message.id, Message.created_at, MessageEmbedding.vector)
                .join(
                    MessageEmbedding,
                    (MessageEmbedding.message_id == Message.id) & (MessageEmbedding.embedder == embedder.name),
                )
                .where(Message.user_id == pk, Message.role == "user")
                .order_by(Message.created_at.desc())
                .limit(limit)
            ).all()
            feedback = session.execute(select(Feedback).where(Feedback.user_id == pk)).scalars().all()
            feedback_rows = [self._feedback_row(item, embedder) for item in feedback]
            explicit = dict(
                session.execute(
                    select(PreferenceSetting.dimension, PreferenceSetting.pole).where(PreferenceSetting.user_id == pk)
                ).all()
            )
        explicit = {dimension: pole for dimension, pole in explicit.items() if dimension in self.catalog.names}
        if rows:
            messages = MessageRows(
                ids=np.fromiter((row.id for row in rows), np.int64, len(rows)),
                times=np.fromiter((as_utc(row.created_at).timestamp() for row in rows), np.float64, len(rows)),
                vectors=np.frombuffer(b"".join(row.vector for row in rows), np.float32).reshape(len(rows), -1),
            )
        else:
            messages = MessageRows.empty(embedder.dim)
        query_vector = self._query_vector(query) if query else None
        return self.inference.infer(
            user_id,
            messages,
            feedback=feedback_rows,
            explicit=explicit,
            query=query,
            query_vector=query_vector,
            texts=lambda ids: self._texts(pk, ids),
        )

    def _texts(self, user_pk: int, message_ids: list[int]) -> dict[int, str]:
        with self._read() as session:
            return dict(
                session.execute(
                    select(Message.id, Message.text).where(Message.user_id == user_pk, Message.id.in_(message_ids))
                ).all()
            )

    def _feedback_row(self, item: Feedback, embedder: Embedder) -> FeedbackRow:
        """Feedback as inference needs it; vectors are re-embedded if they were stored under another embedder."""
        texts = self._feedback_texts(item)
        if item.embedder == embedder.name and item.vectors is not None:
            vectors = np.frombuffer(item.vectors, np.float32).reshape(len(texts), -1)
        else:
            vectors = encode_normalised(embedder, texts)
        pair = item.chosen is not None
        return FeedbackRow(
            feedback_id=item.id,
            message_id=item.message_id,
            time=as_utc(item.created_at).timestamp(),
            text=item.chosen if item.chosen is not None else item.response or "",
            prompt=vectors[0],
            positive=vectors[1],
            negative=vectors[2] if pair else None,
            rating=1.0 if pair else float(item.rating or 0.0),
        )

    @staticmethod
    def _feedback_texts(item: Feedback) -> list[str]:
        if item.chosen is not None:
            return [item.prompt, item.chosen, item.rejected or ""]
        return [item.prompt, item.response or ""]

    # ---------------------------------------------------------------------------------------- explicit settings

    def set_preference(self, user_id: str, dimension: str, pole: str) -> None:
        """Set ``dimension = pole`` explicitly (creating the user when new); it overrides inference."""
        self.catalog.dimension(dimension).pole(pole)
        with self._write() as session:
            pk = self._ensure_user(session, user_id)
            session.execute(
                delete(PreferenceSetting).where(
                    PreferenceSetting.user_id == pk, PreferenceSetting.dimension == dimension
                )
            )
            session.execute(
                insert(PreferenceSetting).values(user_id=pk, dimension=dimension, pole=pole, updated_at=_now())
            )

    def unset_preference(self, user_id: str, dimension: str) -> bool:
        """Remove an explicit setting; returns whether there was one."""
        self.catalog.dimension(dimension)
        with self._write() as session:
            pk = self._require_user(session, user_id)
            result = session.execute(
                delete(PreferenceSetting).where(
                    PreferenceSetting.user_id == pk, PreferenceSetting.dimension == dimension
                )
            )
            return bool(cast("CursorResult[Any]", result).rowcount)  # DML statements return a CursorResult

    def explicit_preferences(self, user_id: str) -> dict[str, str]:
        with self._read() as session:
            pk = self._require_user(session, user_id)
            return dict(
                session.execute(
                    select(PreferenceSetting.dimension, PreferenceSetting.pole)
                    .where(PreferenceSetting.user_id == pk)
                    .order_by(PreferenceSetting.dimension)
                ).all()
            )

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
        item = feedback_input(prompt=prompt, response=response, rating=rating, chosen=chosen, rejected=rejected)
        for what, text in (
            ("prompt", prompt),
            ("response", response),
            ("chosen response", chosen),
            ("rejected response", rejected),
        ):
            if text is not None:
                self._check_size(text, what)
        is_pair, rating = item.is_pair, item.rating
        with self._read() as session:
            pk = self._user_pk(session, user_id)
            if message_id is not None:
                message = session.execute(select(Message.user_id, Message.text).where(Message.id == message_id)).first()
                if message is None or message.user_id != pk:
                    raise InvalidInputError(f"message {message_id} does not belong to user {user_id!r}")
                if not is_pair and response is None:
                    response = message.text
        if not is_pair:
            _check_text(response or "", "response")
        texts = [prompt, chosen or "", rejected or ""] if is_pair else [prompt, response or ""]
        vectors = encode_normalised(self.embedder, texts)
        with self._write() as session:
            pk = self._ensure_user(session, user_id, pk)
            return session.execute(
                insert(Feedback)
                .values(
                    user_id=pk,
                    message_id=message_id,
                    prompt=prompt,
                    response=response,
                    rating=None if rating is None else float(rating),
                    chosen=chosen,
                    rejected=rejected,
                    created_at=_now(),
                    embedder=self.embedder.name,
                    vectors=vectors.tobytes(),
                )
                .returning(Feedback.id)
            ).scalar_one()

    def feedback_pairs(self, user_id: str) -> list[FeedbackPair]:
        """Preference pairs for training a per-user reward: every chosen/rejected pair, plus, for ratings of the
        same prompt, each better-rated response over each worse-rated one."""
        with self._read() as session:
            pk = self._require_user(session, user_id)
            items = (
                session.execute(
                    select(Feedback).where(Feedback.user_id == pk).order_by(Feedback.created_at, Feedback.id)
                )
                .scalars()
                .all()
            )
        pairs = [
            FeedbackPair(
                prompt=item.prompt,
                chosen=item.chosen,
                rejected=item.rejected,
                created_at=_from_db_time(item.created_at),
            )
            for item in items
            if item.chosen is not None
        ]
        rated: dict[str, list[tuple[float, Feedback]]] = {}
        for item in items:
            if item.rating is not None:
                rated.setdefault(item.prompt, []).append((item.rating, item))
        for prompt, group in rated.items():
            for better_rating, better in group:
                for worse_rating, worse in group:
                    if better_rating > worse_rating and better.response != worse.response:
                        pairs.append(
                            FeedbackPair(
                                prompt=prompt,
                                chosen=better.response,
                                rejected=worse.response,
                                created_at=_from_db_time(max(better.created_at, worse.created_at)),
                            )
                        )
        return pairs

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
        _check_text(name, "reward head name")
        with self._write() as session:
            pk = self._ensure_user(session, user_id, expected_key)
            session.execute(delete(RewardHead).where(RewardHead.user_id == pk, RewardHead.name == name))
            session.execute(
                insert(RewardHead).values(
                    user_id=pk, name=name, data=bytes(data), meta=dict(meta or {}), created_at=_now()
                )
            )

    def reward_heads(self, user_id: str) -> list[StoredRewardHead]:
        with self._read() as session:
            pk = self._user_pk(session, user_id)
            if pk is None:
                return []
            heads = (
                session.execute(select(RewardHead).where(RewardHead.user_id == pk).order_by(RewardHead.name))
                .scalars()
                .all()
            )
            return [
                StoredRewardHead(
                    name=head.name, data=head.data, meta=head.meta, created_at=_from_db_time(head.created_at)
                )
                for head in heads
            ]

    def delete_reward_head(self, user_id: str, name: str) -> bool:
        with self._write() as session:
            pk = self._require_user(session, user_id)
            result = session.execute(delete(RewardHead).where(RewardHead.user_id == pk, RewardHead.name == name))
            return bool(cast("CursorResult[Any]", result).rowcount)  # DML statements return a CursorResult

    # --------------------------------------------------------------------------------------- export / import

    def export_user(self, user_id: str) -> ProfileExport:
        """Everything stored about the user, in the versioned export format (see ``profiles.exchange``)."""
        with self._read() as session:
            pk = self._require_user(session, user_id)
            user = session.get_one(User, pk)
            conversations = (
                session.execute(select(Conversation).where(Conversation.user_id == pk).order_by(Conversation.id))
                .scalars()
                .all()
            )
            messages = (
                session.execute(
                    select(Message)
                    .where(Message.user_id == pk)
                    .order_by(Message.conversation_id, Message.created_at, Message.id)
                )
                .scalars()
                .all()
            )
            feedback = (
                session.execute(
                    select(Feedback).where(Feedback.user_id == pk).order_by(Feedback.created_at, Feedback.id)
                )
                .scalars()
                .all()
            )
            settings = (
                session.execute(
                    select(PreferenceSetting)
                    .where(PreferenceSetting.user_id == pk)
                    .order_by(PreferenceSetting.dimension)
                )
                .scalars()
                .all()
            )
            heads = (
                session.execute(select(RewardHead).where(RewardHead.user_id == pk).order_by(RewardHead.name))
                .scalars()
                .all()
            )
            refs: dict[int, int] = {}
            by_conversation: dict[int, list[ExportedMessage]] = {conversation.id: [] for conversation in conversations}
            for message in messages:
                refs[message.id] = len(refs) + 1
                by_conversation[message.conversation_id].append(
                    ExportedMessage(
                        ref=refs[message.id], role=message.role, text=message.text, created_at=message.created_at
                    )
                )
            return ProfileExport(
                user_id=user.name,
                created_at=user.created_at,
                conversations=[
                    ExportedConversation(
                        title=conversation.title,
                        created_at=conversation.created_at,
                        messages=by_conversation[conversation.id],
                    )
                    for conversation in conversations
                ],
                feedback=[
                    ExportedFeedback(
                        prompt=item.prompt,
                        response=item.response,
                        rating=item.rating,
                        chosen=item.chosen,
                        rejected=item.rejected,
                        message_ref=refs.get(item.message_id) if item.message_id else None,
                        created_at=item.created_at,
                    )
                    for item in feedback
                ],
                preferences=[
                    ExportedSetting(dimension=item.dimension, pole=item.pole, updated_at=item.updated_at)
                    for item in settings
                ],
                reward_heads=[
                    ExportedRewardHead(name=head.name, data=head.data, meta=head.meta, created_at=head.created_at)
                    for head in heads
                ],
            )

    def import_user(self, data: ProfileExport, *, user_id: str | None = None, progress: Progress | None = None) -> str:
        """Create a user from an export (as ``user_id`` when given), atomically. Refuses an existing user and
        settings the catalog does not know. Returns the user id."""
        name = validate_user_id(user_id, where="the user id to import as") if user_id is not None else data.user_id
        validate_user_id(name)
        for setting in data.preferences:
            self.catalog.dimension(setting.dimension).pole(setting.pole)
        messages = [message for conversation in data.conversations for message in conversation.messages]
        for message in messages:
            self._check_size(message.text, f"message ref {message.ref}")
        for number, item in enumerate(data.feedback, start=1):
            for text in (item.prompt, item.response, item.chosen, item.rejected):
                if text is not None:
                    self._check_size(text, f"feedback {number}")
        message_vectors = self._embed([message.text for message in messages], progress)
        feedback_vectors = [
            encode_normalised(
                self.embedder,
                [item.prompt, item.chosen, item.rejected or ""]
                if item.chosen is not None
                else [item.prompt, item.response or ""],
            )
            for item in data.feedback
        ]
        embedder = self.embedder
        with self._write() as session:
            if self._user_pk(session, name) is not None:
                raise UserExistsError(name)
            pk = session.scalar(
                insert(User).values(name=name, created_at=_to_db_time(data.created_at)).returning(User.id)
            )
            generation = self._bump_generation(session)
            ids: dict[int, int] = {}
            for conversation in data.conversations:
                conversation_id = session.scalar(
                    insert(Conversation)
                    .values(user_id=pk, title=conversation.title, created_at=_to_db_time(conversation.created_at))
                    .returning(Conversation.id)
                )
                if not conversation.messages:
                    continue
                new_ids = session.scalars(
                    insert(Message).returning(Message.id, sort_by_parameter_order=True),
                    [
                        {
                            "conversation_id": conversation_id,
                            "user_id": pk,
                            "role": message.role,
                            "text": message.text,
                            "created_at": _to_db_time(message.created_at),
                        }
                        for message in conversation.messages
                    ],
                )
                ids.update(zip((message.ref for message in conversation.messages), new_ids, strict=True))
            if messages:
                session.execute(
                    insert(MessageEmbedding),
                    [
                        {
                            "message_id": ids[message.ref],
                            "embedder": embedder.name,
                            "user_id": pk,
                            "dim": embedder.dim,
                            "vector": vector.tobytes(),
                            "generation": generation,
                        }
                        for message, vector in zip(messages, message_vectors, strict=True)
                    ],
                )
            for item, vectors in zip(data.feedback, feedback_vectors, strict=True):
                session.execute(
                    insert(Feedback).values(
                        user_id=pk,
                        message_id=ids.get(item.message_ref) if item.message_ref else None,
                        prompt=item.prompt,
                        response=item.response,
                        rating=item.rating,
                        chosen=item.chosen,
                        rejected=item.rejected,
                        created_at=_to_db_time(item.created_at),
                        embedder=embedder.name,
                        vectors=vectors.tobytes(),
                    )
                )
            for setting in data.preferences:
                session.execute(
                    insert(PreferenceSetting).values(
                        user_id=pk,
                        dimension=setting.dimension,
                        pole=setting.pole,
                        updated_at=_to_db_time(setting.updated_at),
                    )
                )
            for head in data.reward_heads:
                session.execute(
                    insert(RewardHead).values(
                        user_id=pk,
                        name=head.name,
                        data=head.data,
                        meta=head.meta,
                        created_at=_to_db_time(head.created_at),
                    )
                )
        return name
