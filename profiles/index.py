"""``EmbeddingIndex``: the faiss cache of one embedder's message vectors, partitioned by user.

Layout: an ``IndexIVFFlat`` whose inverted lists are *user buckets*, not clusters. A vector of user ``u`` goes to
list ``u % nlist`` with the faiss id ``(u << 32) | message_id``. A search for ``u`` scans only list ``u % nlist``
and only ids in ``[u << 32, (u + 1) << 32)``, so it costs O(that user's bucket), not O(store), and by construction
it cannot return another user's vector (the store checks ownership again when it fetches texts).

The index is a cache of the ``message_embeddings`` table. Its file carries a header (format, the store's uuid, the
embedder, dim, nlist, the store generation it reflects) and a SHA-256 of the faiss payload; ``load`` returns None for
a missing, corrupt or foreign file, and the store then rebuilds from SQLite. Files are replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

_MAGIC = b"PANDA-PROFILES-FAISS\n"
_FORMAT = 1
DEFAULT_NLIST = 4096
_MAX_MESSAGE_ID = (1 << 32) - 1


class IndexHeader(BaseModel):
    """What an index file says about itself; compared with the database before the file is trusted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = _FORMAT
    store_uuid: str
    embedder: str
    dim: int
    nlist: int
    generation: int


class EmbeddingIndex:
    """Per-user exact inner-product search over normalised vectors (see the module docstring)."""

    def __init__(self, header: IndexHeader, index: faiss.IndexIVFFlat | None = None) -> None:
        self.header = header
        if index is None:
            self._quantizer = faiss.IndexFlatIP(header.dim)  # never used: lists are assigned by user, not trained
            index = faiss.IndexIVFFlat(self._quantizer, header.dim, header.nlist, faiss.METRIC_INNER_PRODUCT)
            index.is_trained = True
        self._index = index
        self.unsaved_vectors = 0  # added since the file was last written (or read)

    @property
    def generation(self) -> int:
        return self.header.generation

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def mark_generation(self, generation: int) -> None:
        self.header = self.header.model_copy(update={"generation": generation})

    def add(self, user_ids: np.ndarray, message_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors; ``user_ids`` and ``message_ids`` are int arrays aligned with the rows of ``vectors``."""
        if len(vectors) == 0:
            return
        users = np.asarray(user_ids, dtype=np.int64)
        messages = np.asarray(message_ids, dtype=np.int64)
        if messages.max() > _MAX_MESSAGE_ID or messages.min() < 0 or users.min() < 0:
            raise ValueError("message ids must fit in 32 bits and user ids must be non-negative")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray((users << 32) | messages)
        lists = np.ascontiguousarray(users % self.header.nlist)
        self._index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        self.unsaved_vectors += len(x)

    def remove_user(self, user_id: int) -> int:
        """Remove every vector of one user; returns how many were removed."""
        return int(self._index.remove_ids(faiss.IDSelectorRange(user_id << 32, (user_id + 1) << 32)))

    def count_user(self, user_id: int) -> int:
        """How many vectors of this user the index holds (used to verify that forgetting left nothing)."""
        invlists = self._index.invlists
        if invlists is None:
            raise RuntimeError("the faiss index has no inverted lists; rebuild the index cache")
        bucket = user_id % self.header.nlist
        size = invlists.list_size(bucket)
        if size == 0:
            return 0
        ids = faiss.rev_swig_ptr(invlists.get_ids(bucket), size).copy()
        return int(np.count_nonzero((ids >> 32) == user_id))

    def search(self, user_id: int, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` best ``(message_id, inner product)`` of this user, best first."""
        if k <= 0:
            return []
        x = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.header.dim)
        assign = np.array([[user_id % self.header.nlist]], dtype=np.int64)
        centroid_distances = np.zeros((1, 1), dtype=np.float32)
        distances = np.empty((1, k), dtype=np.float32)
        labels = np.empty((1, k), dtype=np.int64)
        selector = faiss.IDSelectorRange(user_id << 32, (user_id + 1) << 32)
        # faiss's stubs list neither SWIG keyword arguments nor the raw ``_c`` entry points.
        params = faiss.SearchParametersIVF(sel=selector, nprobe=1)  # type: ignore[call-arg]
        self._index.search_preassigned_c(  # type: ignore[attr-defined]
            1,
            faiss.swig_ptr(x),
            k,
            faiss.swig_ptr(assign),
            faiss.swig_ptr(centroid_distances),
            faiss.swig_ptr(distances),
            faiss.swig_ptr(labels),
            False,
            params,
        )
        return [
            (int(label & _MAX_MESSAGE_ID), float(distance))
            for label, distance in zip(labels[0], distances[0], strict=True)
            if label >= 0 and (label >> 32) == user_id
        ]

    def save(self, path: Path) -> None:
        """Write header + checksum + payload to a temporary file, then rename it over ``path`` (atomic)."""
        payload = faiss.serialize_index(self._index)  # a uint8 array: hashed and written without another copy
        header = self.header.model_dump_json().encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(_MAGIC + struct.pack("<Q", len(header)) + header)
                file.write(hashlib.sha256(payload.data).digest())
                file.write(payload.data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.unsaved_vectors = 0

    @staticmethod
    def read_header(path: Path) -> IndexHeader | None:
        """The header of an index file, or None when the file is missing or does not start like one."""
        try:
            with path.open("rb") as file:
                return _read_header(file)
        except (OSError, ValueError, ValidationError, struct.error):
            return None

    @classmethod
    def load(cls, path: Path, expected: IndexHeader) -> EmbeddingIndex | None:
        """The index in ``path`` if it is intact and was written for ``expected`` (same store, embedder, dim, nlist,
        and a generation not ahead of the database); None otherwise, meaning: rebuild."""
        try:
            with path.open("rb") as file:
                header = _read_header(file)
                if header.model_copy(update={"generation": expected.generation}) != expected:
                    return None
                if header.generation > expected.generation:
                    return None
                checksum = file.read(32)
                payload = file.read()
        except (OSError, ValueError, ValidationError, struct.error):
            return None
        if hashlib.sha256(payload).digest() != checksum:
            return None
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError:
            return None
        if not isinstance(index, faiss.IndexIVFFlat) or index.d != header.dim or index.nlist != header.nlist:
            return None
        return cls(header, index)


def _read_header(file: BinaryIO) -> IndexHeader:
    if file.read(len(_MAGIC)) != _MAGIC:
        raise ValueError("not a profile index file")
    (length,) = struct.unpack("<Q", file.read(8))
    if length > 1 << 20:
        raise ValueError("implausible header length")
    return IndexHeader.model_validate(json.loads(file.read(length)))
