"""What every part of the profile store shares: its transactions, user keys, generation counters and timestamps.

The store is split into parts (messages, retrieval, the index cache, feedback, export/import, forgetting), each a
small module; they all read and write through one ``Transactions`` object and look users up with the functions
here, so the rules that keep one user's data apart (a write for a user forgotten meanwhile is refused; keys are never
reused) and the generation counters that the faiss cache is checked against are written once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from profiles.database import WRITE_OPTIONS
from profiles.errors import UnknownUserError, UserForgottenError
from profiles.exchange import as_utc
from profiles.ids import validate_user_id
from profiles.models import StoreState, User

# One lock per SQLite database file, shared by every store and key table of the process on that file (a process-wide
# registry, like the model registry): see ``Transactions.write``.
_sqlite_writers: dict[str, threading.RLock] = {}
_sqlite_writers_lock = threading.Lock()


def _process_write_lock(engine: Engine) -> threading.RLock | None:
    if engine.url.get_backend_name() != "sqlite":
        return None  # PostgreSQL queues writers itself, without sleeping
    with _sqlite_writers_lock:
        return _sqlite_writers.setdefault(str(engine.url), threading.RLock())


class Transactions:
    """Read and write transactions on one store database (the engine is configured by ``profiles.database``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**WRITE_OPTIONS)
        self._write_lock = _process_write_lock(engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: all or nothing, holding the database's write lock from its start (SQLite's
        ``BEGIN IMMEDIATE``, PostgreSQL's advisory lock), so writers from every process queue.

        On SQLite the writers of this process first queue on an in-process lock: a writer that finds the file locked
        sleeps in growing steps (up to 100 ms) before it retries, so concurrent writers of one process (a server's
        requests) would otherwise wait far longer than the write they wait for. Other processes still queue on
        SQLite's own lock."""
        with (
            self._write_lock or nullcontext(),
            Session(self._write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def scalar(self, sql: str, **params: Any) -> Any:
        """One value of a raw SQL query, in a read transaction."""
        with self.read() as session:
            return session.scalar(sql_text(sql), params)


def now() -> datetime:
    """Now, as stored: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_db_time(value: datetime | None) -> datetime:
    """Naive UTC, as stored; ``None`` is now."""
    return now() if value is None else as_utc(value).replace(tzinfo=None)


def from_db_time(value: datetime) -> datetime:
    """A stored timestamp as an aware UTC datetime."""
    return value.replace(tzinfo=UTC)


# The statements every chat call runs, built once: Core statements on the tables (no ORM compile step) with bound
# parameters, so a call pays for executing them, not for building and compiling them again.
_USERS = cast(Table, User.__table__)
_STATE = cast(Table, StoreState.__table__)
_USER_PK = select(_USERS.c.id).where(_USERS.c.name == bindparam("name"))
_NEW_USER = insert(_USERS).returning(_USERS.c.id)
_NEXT_GENERATION = (
    update(_STATE).where(_STATE.c.id == 1).values(generation=_STATE.c.generation + 1).returning(_STATE.c.generation)
)


def user_pk(session: Session, user_id: str) -> int | None:
    """The user's integer key (what every table and the index use), or None."""
    return session.scalar(_USER_PK, {"name": user_id})


def require_user(session: Session, user_id: str) -> int:
    """The user's key; ``UnknownUserError`` when there is no such user."""
    pk = user_pk(session, user_id)
    if pk is None:
        raise UnknownUserError(user_id)
    return pk


def ensure_user(session: Session, user_id: str, seen: int | None = None) -> int:
    """The user's key inside a write transaction, creating a new user. ``seen`` is the key the caller read before
    slow work outside the transaction (embedding): when the user has been forgotten since (the key is gone or
    belongs to a re-created user), the write is refused, so a forget cannot be undone by a write that was already
    running. ``None``: no check (the caller read nothing, or the user did not exist). Keys are never reused."""
    pk = user_pk(session, user_id)
    if seen is not None and pk != seen:
        raise UserForgottenError(user_id)
    if pk is None:
        validate_user_id(user_id)
        pk = session.execute(_NEW_USER, {"name": user_id, "created_at": now()}).scalar_one()
    return pk


def bump_generation(session: Session) -> int:
    """Start a new store generation (every transaction that adds or deletes vectors does); returns it."""
    return session.execute(_NEXT_GENERATION).scalar_one()


def bump_purged_generation(session: Session) -> int:
    """A new generation that deleted vectors: an index cache older than it must be rebuilt (deletions cannot be
    replayed). Returns it."""
    generation = bump_generation(session)
    session.execute(update(StoreState).where(StoreState.id == 1).values(purged_generation=generation))
    return generation
