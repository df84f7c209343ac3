"""The databases the tests run against: SQLite always, and the PostgreSQL server named by
``$PANDA_CHAT_TEST_DATABASE_URL`` when it is set (``.ci/run`` starts one). Each test gets a fresh, empty database
on that server, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

ENV_VAR = "PANDA_CHAT_TEST_DATABASE_URL"


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get(ENV_VAR) else ["sqlite"]


def _admin(url: str):
    return create_engine(url, isolation_level="AUTOCOMMIT")


def fresh_database(server_url: str | None = None) -> str:
    """Create an empty database on the test server; return its URL."""
    server_url = server_url or os.environ[ENV_VAR]
    name = f"panda_test_{uuid.uuid4().hex[:12]}"
    engine = _admin(server_url)
    with engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, server_url: str | None = None) -> None:
    server_url = server_url or os.environ[ENV_VAR]
    engine = _admin(server_url)
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    engine.dispose()


@contextlib.contextmanager
def temporary_database() -> Iterator[str]:
    """A fresh database on the test server for the ``with`` block, dropped afterwards even if the block fails."""
    url = fresh_database()
    try:
        yield url
    finally:
        drop_database(url)
