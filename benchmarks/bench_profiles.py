"""Profile store speed: ingest rate against the embedder's own encode rate, and search / preferences latency for
one user while the store holds many users and messages.

    python benchmarks/bench_profiles.py                      # 10k users, 1M messages (several minutes, ~3 GB disk)
    python benchmarks/bench_profiles.py --users 1000 --messages 100000 --json benchmarks/results/profiles.json

1. Ingest. The ceiling is the default embedder (all-MiniLM-L6-v2) encoding the same texts in the same batches on
   its own. Ingest is ``store.add_messages`` in batches of 256: embedding + SQLite inserts + commit. The two are
   timed alternately, batch by batch, so both see the same machine load. Target >= 0.8x.
2. Scale. ``--users`` users with ``--messages`` messages in all are bulk-inserted with synthetic (random,
   normalised) vectors under the real embedder's name, so the faiss index and SQLite hold the full load; one
   target user then gets ~100 real, embedded messages. The index is rebuilt from SQLite (timed), then we time
   ``search`` (query embedding included, and retrieval alone with a pre-embedded query) and ``preferences``
   (with a query, and without) over many different queries. Targets: search p50 <= 5 ms, preferences p50 <= 20 ms.

Torch runs with ``--threads`` CPU threads (default 1: on a shared 2-core machine one thread is the fastest and the
most stable); the same setting is used for the ceiling and for ingest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from profiles import ProfileStore, SentenceTransformerEmbedder

SUBJECTS = [
    "my sourdough",
    "the tax return",
    "a Rust borrow error",
    "the garden",
    "quantum tunnelling",
    "my cover letter",
    "a trip to Lisbon",
    "the kids' homework",
    "a marathon plan",
    "our database schema",
]
ASKS = [
    "Can you explain {s} in plain words?",
    "Give me a detailed, step-by-step plan for {s}.",
    "tl;dr on {s} please",
    "Dear assistant, kindly review {s} and advise.",
    "hey!! quick q about {s} lol",
    "What are the edge cases of {s}, rigorously?",
    "I'm new to {s}, where do I start?",
    "Compare two approaches to {s} and their trade-offs.",
]


def realistic_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(ASKS).format(s=rng.choice(SUBJECTS)) + f" (#{i})" for i in range(count)]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


def bench_ingest(embedder: SentenceTransformerEmbedder, count: int, folder: Path) -> dict[str, float]:
    """Batch by batch, alternately: the embedder alone on a batch, then ``store.add_messages`` of the same batch.
    Interleaving keeps both measurements under the same machine load (the cores here are shared)."""
    texts = realistic_texts(count, seed=1)
    batch = 256
    embedder.encode(texts[:batch])  # warm-up
    raw_seconds = ingest_seconds = 0.0
    with ProfileStore(folder / "ingest.db", embedder=embedder) as store:
        store.add_messages("warmup", [("user", "warm-up message", None)])
        for offset in range(0, count, batch):
            chunk = texts[offset : offset + batch]
            start = time.perf_counter()
            embedder.encode(chunk)
            raw_seconds += time.perf_counter() - start
            start = time.perf_counter()
            store.add_messages(f"user{offset // batch % 8}", [("user", text, None) for text in chunk])
            ingest_seconds += time.perf_counter() - start
    raw_rate, ingest_rate = count / raw_seconds, count / ingest_seconds
    return {"raw_encode_per_s": raw_rate, "ingest_per_s": ingest_rate, "ratio": ingest_rate / raw_rate}


def bulk_fill(path: Path, embedder_name: str, dim: int, users: int, messages: int) -> float:
    """Insert ``users`` users with ``messages`` messages in all, with random unit vectors, straight into SQLite
    (the store's own schema, already migrated). Returns seconds."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = OFF")
    base = datetime(2024, 1, 1)
    stamp = base.strftime("%Y-%m-%d %H:%M:%S.%f")
    per_user = messages // users
    with connection:
        connection.executemany(
            "INSERT INTO users (id, name, created_at) VALUES (?, ?, ?)",
            ((u + 1, f"bulk{u:06d}", stamp) for u in range(users)),
        )
        connection.executemany(
            "INSERT INTO conversations (id, user_id, title, created_at) VALUES (?, ?, NULL, ?)",
            ((u + 1, u + 1, stamp) for u in range(users)),
        )
    message_id = 0
    chunk_users = max(1, 20_000 // per_user)
    for first in range(0, users, chunk_users):
        rows, embeddings = [], []
        chunk = range(first, min(users, first + chunk_users))
        vectors = rng.standard_normal((len(chunk) * per_user, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        row = 0
        for user in chunk:
            for number in range(per_user):
                message_id += 1
                created = (base + timedelta(minutes=message_id)).strftime("%Y-%m-%d %H:%M:%S.%f")
                rows.append(
                    (message_id, user + 1, user + 1, "user", f"synthetic message {number} of bulk{user:06d}", created)
                )
                embeddings.append((message_id, embedder_name, user + 1, dim, vectors[row].tobytes(), 1))
                row += 1
        with connection:
            connection.executemany(
                "INSERT INTO messages (id, conversation_id, user_id, role, text, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.executemany(
                "INSERT INTO message_embeddings (message_id, embedder, user_id, dim, vector, "
                "generation) VALUES (?, ?, ?, ?, ?, ?)",
                embeddings,
            )
    with connection:
        connection.execute("UPDATE store_state SET generation = 1")
    connection.close()
    return time.perf_counter() - start


def bench_scale(
    embedder: SentenceTransformerEmbedder, users: int, messages: int, folder: Path, queries: int
) -> dict[str, float]:
    path = folder / "scale.db"
    ProfileStore(path, embedder=embedder).close()  # migrate
    fill_s = bulk_fill(path, embedder.name, embedder.dim, users, messages)
    results: dict[str, float] = {"fill_s": fill_s}
    with ProfileStore(path, embedder=embedder) as store:
        start = time.perf_counter()
        index = store.rebuild_index()
        results["index_rebuild_s"] = time.perf_counter() - start
        results["index_vectors"] = index.ntotal
        now = datetime.now(UTC)
        texts = realistic_texts(100, seed=2)
        store.add_messages("target", [("user", text, now - timedelta(days=100 - i)) for i, text in enumerate(texts)])
        query_texts = realistic_texts(queries, seed=3)
        store.search("target", "warm-up query")
        store.preferences("target", query="warm-up query")

        timings: dict[str, list[float]] = {
            "embed_query": [],
            "search": [],
            "search_retrieval_only": [],
            "preferences_query": [],
            "preferences_no_query": [],
        }
        for query in query_texts:
            start = time.perf_counter()
            embedder.encode([query])
            timings["embed_query"].append(time.perf_counter() - start)
            store._query_vectors.clear()
            start = time.perf_counter()
            store.search("target", query, k=5)
            timings["search"].append(time.perf_counter() - start)
            vector = store._query_vector(query)
            start = time.perf_counter()
            store.search_vector("target", vector, k=5)
            timings["search_retrieval_only"].append(time.perf_counter() - start)
            store._query_vectors.clear()
            start = time.perf_counter()
            store.preferences("target", query=query)
            timings["preferences_query"].append(time.perf_counter() - start)
            start = time.perf_counter()
            store.preferences("target")
            timings["preferences_no_query"].append(time.perf_counter() - start)
        for name, samples in timings.items():
            results[f"{name}_p50_ms"], results[f"{name}_p99_ms"] = percentiles(samples)
        cached = []
        for query in query_texts:  # what a chat turn pays for `search` after `preferences` embedded its prompt
            store.preferences("target", query=query)
            start = time.perf_counter()
            store.search("target", query, k=5)
            cached.append(time.perf_counter() - start)
        results["search_after_preferences_p50_ms"], results["search_after_preferences_p99_ms"] = percentiles(cached)
    results["db_bytes"] = path.stat().st_size
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--ingest", type=int, default=2048, help="Messages for the ingest part.")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads while encoding.")
    parser.add_argument("--folder", type=Path, default=None, help="Where to put the databases (default: a temp dir).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument("--ingest-only", action="store_true", help="Skip the scale part.")
    args = parser.parse_args()

    if args.folder is not None:
        args.folder.mkdir(parents=True, exist_ok=True)
    embedder = SentenceTransformerEmbedder(num_threads=args.threads)
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        ingest = bench_ingest(embedder, args.ingest, Path(folder))
        print(f"ingest ({args.ingest} messages, batches of 256, {args.threads} torch thread(s))")
        print(f"  raw encode        {ingest['raw_encode_per_s']:8.0f} msg/s   (ceiling)")
        print(
            f"  store ingest      {ingest['ingest_per_s']:8.0f} msg/s   ({ingest['ratio']:.2f}x the ceiling; "
            "target >= 0.8x)"
        )
        sys.stdout.flush()
        if args.ingest_only:
            return
        scale = bench_scale(embedder, args.users, args.messages, Path(folder), args.queries)
    print(
        f"scale: {args.users} users, {scale['index_vectors']:.0f} vectors "
        f"(bulk fill {scale['fill_s']:.0f} s, index rebuild from SQLite {scale['index_rebuild_s']:.1f} s, "
        f"database {scale['db_bytes'] / 1e9:.2f} GB)"
    )
    print(f"  {'operation (one user, ~100 messages)':<44} {'p50 ms':>8} {'p99 ms':>8}")
    for label, key in [
        ("embed the query alone (the model's share)", "embed_query"),
        ("search, query embedding included", "search"),
        ("search, retrieval only (query pre-embedded)", "search_retrieval_only"),
        ("search right after preferences(same query)", "search_after_preferences"),
        ("preferences(query), embedding included", "preferences_query"),
        ("preferences() without a query", "preferences_no_query"),
    ]:
        print(f"  {label:<44} {scale[key + '_p50_ms']:8.2f} {scale[key + '_p99_ms']:8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": {
                        "platform": platform.platform(),
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                    },
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "ingest": ingest,
                    "scale": scale,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
