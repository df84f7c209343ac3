"""The policy that keeps the faiss index (``profiles.index``) a faithful cache of the ``message_embeddings`` table.

``profiles.index`` is the data structure and its file format; this module decides when the file may be trusted.
Before every search the cache is checked against the database's generation counters (``store_state``): a file that
is missing, corrupt, foreign (another store, embedder, dim or nlist), ahead of the database, or older than the last
generation that deleted vectors is rebuilt from SQLite; otherwise it is caught up from the rows written since. A
forgotten user's vectors are removed from the loaded cache and its file rewritten (or deleted, to be rebuilt). On
close the file is rewritten only when it grew enough to be worth it, and never with vectors of a user another
process has forgotten since.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiles.embedders import Embedder
from profiles.errors import ProfileError
from profiles.index import EmbeddingIndex, IndexHeader
from profiles.models import MessageEmbedding, StoreState
from profiles.transactions import Transactions

RESAVE_MIN_VECTORS = 1000
"""The file is rewritten on close only when this many vectors (or 5% of it) were added since it was read: smaller
gaps are cheaper to catch up from the database on the next open than to rewrite a large file every time."""


class IndexCache:
    """The loaded ``EmbeddingIndex`` of one store (``path``: its file; None keeps it in memory only). Thread-safe."""

    def __init__(self, transactions: Transactions, path: Path | None, nlist: int) -> None:
        self._transactions = transactions
        self.path = path
        self.nlist = nlist
        self.index: EmbeddingIndex | None = None  # None until the first search (or after a forget made it stale)
        self._lock = threading.RLock()

    def search(self, embedder: Embedder, user_pk: int, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The user's ``k`` best ``(message_id, inner product)``, from a cache brought up to date first."""
        with self._lock:
            return self._synced(embedder).search(user_pk, vector, k)

    def _expected_header(self, state: StoreState, embedder: Embedder) -> IndexHeader:
        return IndexHeader(
            store_uuid=state.store_uuid,
            embedder=embedder.name,
            dim=embedder.dim,
            nlist=self.nlist,
            generation=state.generation,
        )

    def _synced(self, embedder: Embedder) -> EmbeddingIndex:
        """The index, brought up to the database's generation: loaded from its file if that is intact and ours,
        caught up from newer rows, or rebuilt."""
        with self._transactions.read() as session:
            state = session.get_one(StoreState, 1)
            expected = self._expected_header(state, embedder)
            if self.index is None and self.path is not None:
                self.index = EmbeddingIndex.load(self.path, expected)
            index = self.index
            stale = (
                index is None
                or index.header.model_copy(update={"generation": state.generation}) != expected
                or index.generation < state.purged_generation
                or index.generation > state.generation
            )
            if index is not None and not stale and index.generation < state.generation:
                _add_rows(index, session, MessageEmbedding.generation > index.generation)
                index.mark_generation(state.generation)
        return self.rebuild(embedder) if stale or index is None else index

    def rebuild(self, embedder: Embedder) -> EmbeddingIndex:
        """Rebuild the cache from the stored vectors and save it."""
        with self._lock:
            with self._transactions.read() as session:
                state = session.get_one(StoreState, 1)
                index = EmbeddingIndex(self._expected_header(state, embedder))
                _add_rows(index, session, MessageEmbedding.generation <= state.generation)
            if self.path is not None:
                index.save(self.path)
            self.index = index
            return index

    def forget_user(self, user_pk: int, generation: int) -> tuple[int, Literal["rewritten", "deleted", "none"]]:
        """After the transaction ``generation`` deleted the user: drop their vectors from the loaded index and
        rewrite its file; a file this process has not loaded (or one that other writers made stale meanwhile) is
        deleted, to be rebuilt without the user. Returns how many entries were removed and what became of the
        file."""
        with self._lock:
            index, path = self.index, self.path
            removed = index.remove_user(user_pk) if index is not None else 0
            if index is not None and index.count_user(user_pk):
                raise ProfileError(f"the index cache still holds vectors of user key {user_pk} after removing them")
            if index is not None and index.generation == generation - 1:
                index.mark_generation(generation)
                if path is None:
                    return removed, "none"
                index.save(path)
                return removed, "rewritten"
            self.index = None
            if path is None or not path.exists():
                return removed, "none"
            path.unlink()
            return removed, "deleted"

    def save_if_grown(self) -> None:
        """Rewrite the file when enough vectors were added since it was read (see ``RESAVE_MIN_VECTORS``), unless
        another process has forgotten a user since this index was built: its vectors must not be written back."""
        with self._lock:
            index = self.index
            if (
                index is None
                or self.path is None
                or index.unsaved_vectors < max(RESAVE_MIN_VECTORS, index.ntotal // 20)
            ):
                return
            with self._transactions.read() as session:
                state = session.get_one(StoreState, 1)
            if index.generation >= state.purged_generation:
                index.save(self.path)


def _add_rows(index: EmbeddingIndex, session: Session, condition: Any) -> None:
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
