"""Fixtures of the server tests: a fresh database per module, and servers started on it (``server_process``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from database_urls import ENV_VAR, temporary_database
from server_process import Server, start_server


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh profile database for one test module: SQLite, or a new database on the test PostgreSQL server."""
    if not os.environ.get(ENV_VAR):
        yield str(tmp_path_factory.mktemp("server_db") / "profiles.db")
        return
    with temporary_database() as url:
        yield url


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    started: list[Server] = []
    folder = tmp_path_factory.mktemp("server_logs")

    def make(db: str, *extra: str) -> Server:
        server = start_server(db, folder / f"server{len(started)}.log", *extra)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
