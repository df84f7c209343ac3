"""Retrieval in SQL on PostgreSQL with pgvector: shared by every server process on the database, no faiss cache.

Migration 0004 adds an untyped ``vector`` column ``embedding`` to ``message_embeddings`` when the extension is
available. The float32 bytes in ``vector`` stay the source of truth (every backend writes them); a user's rows are
copied into ``embedding`` on their first search after being written, by whichever process searches. One column holds
every embedder's vectors, so the HNSW index is a partial expression index per width, created on first use. Every
query is filtered by user in the same statement. SQLite, and a PostgreSQL without pgvector, use ``IndexCache``.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError

from profiles.transactions import Transactions

MAX_INDEXED_DIM = 2000
"""pgvector's HNSW indexes at most this many dimensions; wider vectors are scanned."""


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form of a float32 vector (each value exactly, as Python writes floats)."""
    return "[" + ",".join(repr(float(value)) for value in vector) + "]"


class PgvectorRetrieval:
    """Nearest-message search for one store database (see the module docstring)."""

    def __init__(self, transactions: Transactions) -> None:
        self._transactions = transactions
        self._available: bool | None = None  # decided on first use
        self._hnsw_dims: set[int] = set()

    def available(self) -> bool:
        """PostgreSQL with the ``embedding`` column (migration 0004 found the extension)."""
        if self._available is None:
            self._available = (
                self._transactions.engine.dialect.name == "postgresql"
                and self._transactions.scalar(
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'message_embeddings' AND column_name = 'embedding'"
                )
                > 0
            )
        return self._available

    def search(self, embedder_name: str, user_pk: int, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The user's ``k`` nearest messages by inner product (vectors are normalised: cosine), in one SQL query
        filtered by user, after copying the user's rows not yet in the ``embedding`` column."""
        dim = int(vector.shape[0])
        self._copy_new_vectors(embedder_name, user_pk)
        self._ensure_hnsw_index(dim)
        distance = f"(embedding::vector({dim})) <#> CAST(:query AS vector({dim}))"  # the negated inner product
        where = f"user_id = :user AND embedder = :embedder AND dim = {dim} AND embedding IS NOT NULL"
        params = {"user": user_pk, "embedder": embedder_name, "query": vector_literal(vector), "k": k}
        with self._transactions.read() as session:
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

    def _copy_new_vectors(self, embedder_name: str, user_pk: int) -> None:
        """Copy the user's vectors written since their last search (by any process) into ``embedding``."""
        with self._transactions.read() as session:
            unsynced = session.execute(
                sql_text(
                    "SELECT message_id, vector FROM message_embeddings "
                    "WHERE user_id = :user AND embedder = :embedder AND embedding IS NULL"
                ),
                {"user": user_pk, "embedder": embedder_name},
            ).all()
        if not unsynced:
            return
        with self._transactions.write() as session:
            session.execute(
                sql_text(
                    "UPDATE message_embeddings SET embedding = CAST(:vector AS vector) "
                    "WHERE message_id = :message AND embedder = :embedder AND embedding IS NULL"
                ),
                [
                    {
                        "message": message,
                        "embedder": embedder_name,
                        "vector": vector_literal(np.frombuffer(data, np.float32)),
                    }
                    for message, data in unsynced
                ],
            )

    def _ensure_hnsw_index(self, dim: int) -> None:
        """One HNSW index per embedding width (a partial expression index), created on first use."""
        if dim in self._hnsw_dims or dim > MAX_INDEXED_DIM:
            return
        name = f"ix_message_embeddings_hnsw_{dim}"
        try:
            with self._transactions.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    f"CREATE INDEX IF NOT EXISTS {name} ON message_embeddings "
                    f"USING hnsw ((embedding::vector({dim})) vector_ip_ops) WHERE dim = {dim}"
                )
        except DBAPIError:  # another process created it at the same moment
            if not self._transactions.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = :name", name=name):
                raise
        self._hnsw_dims.add(dim)
