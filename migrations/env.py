"""Alembic environment: runs migrations on the connection ``profiles.database.upgrade_schema`` passes in, or, for
developers running the ``alembic`` command, on ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from profiles.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: no database to migrate; set sqlalchemy.url in the alembic config file")
    with create_engine(url).begin() as own_connection:
        _run(own_connection)
