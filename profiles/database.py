"""Opening a profile database: where it lives, how SQLite is configured, and bringing its schema up to date.

The location is, in order: the URL given, ``$PANDA_CHAT_DB``, then ``profiles.db`` in the user's data directory
(platformdirs). Any SQLAlchemy URL works; a bare path means a SQLite file. SQLite connections get WAL mode (readers
never block the writer), a busy timeout (writers from several processes queue instead of failing), foreign keys
(cascading deletes) and secure_delete (a forgotten user's text is overwritten, not left in free pages). Write
transactions on SQLite start with ``BEGIN IMMEDIATE`` so two processes never deadlock upgrading read locks; on
PostgreSQL they take one transaction-scoped advisory lock, so writers (and schema upgrades) from every process on the
database queue the same way (e.g. two servers creating the same new user).

Migrations live in the top-level ``migrations/`` folder, which is installed next to this package (also from a wheel);
they run on open, under the write lock, so concurrent openers apply them once.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import platformdirs
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from profiles.errors import ProfileError, SchemaTooNewError

DB_ENV_VAR = "PANDA_CHAT_DB"
BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_BEGIN_OPTION = "profiles_sqlite_begin"
_WRITE_LOCK_ID = 0x70616E6461  # any constant: the advisory lock that plays SQLite's write lock on PostgreSQL


def default_url() -> str:
    """``$PANDA_CHAT_DB`` if set, else a SQLite file in the per-user data directory."""
    configured = os.environ.get(DB_ENV_VAR)
    if configured:
        return normalise_url(configured)
    return normalise_url(str(Path(platformdirs.user_data_dir("panda-chat")) / "profiles.db"))


def normalise_url(url_or_path: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL as is; anything without ``://`` is taken as the path of a SQLite file."""
    text = os.fspath(url_or_path)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else None (memory databases, other servers)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


def create_store_engine(url: str) -> Engine:
    """An engine configured as the module docstring says. Write sessions use ``engine.execution_options(
    **WRITE_OPTIONS)``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True)
        if parsed.get_backend_name() == "postgresql":

            @event.listens_for(engine, "begin")
            def _begin_write(connection: Connection) -> None:
                if connection.get_execution_options().get(_BEGIN_OPTION) == "IMMEDIATE":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK_ID})")

        return engine
    path = sqlite_file(url)
    if path is None:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


WRITE_OPTIONS = {_BEGIN_OPTION: "IMMEDIATE"}


def alembic_config() -> Config:
    """Alembic configured in code (no alembic.ini), pointing at the installed ``migrations/`` folder."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise ProfileError(f"the profile store's migrations are missing from {MIGRATIONS_DIR}; reinstall panda-chat")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_schema(engine: Engine) -> None:
    """Apply pending migrations; refuse (``SchemaTooNewError``) a database written by a newer schema."""
    config = alembic_config()
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    with engine.execution_options(**WRITE_OPTIONS).begin() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        if current == head:
            return
        if current is not None:
            try:
                scripts.get_revision(current)
            except CommandError:
                raise SchemaTooNewError(
                    f"the profile database has schema revision {current!r}, newer than this panda-chat knows "
                    f"(up to {head!r}); upgrade panda-chat to open it"
                ) from None
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
