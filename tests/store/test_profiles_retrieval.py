"""Retrieval: scoped to one user, served by a faiss cache that is caught up, rebuilt when missing, corrupt or
foreign, and scrubbed when a user is forgotten."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from profiles import HashingEmbedder, ProfileStore
from profiles.index import EmbeddingIndex


def _fill_near_identical(store: ProfileStore, users: int) -> None:
    """Many users whose texts differ only by a suffix: the worst case for isolation."""
    for number in range(users):
        store.add_messages(
            f"user{number:03d}",
            [
                ("user", f"How do I sharpen a kitchen knife properly? ({number})", None),
                ("user", f"What's a good recipe for sourdough bread? ({number})", None),
            ],
        )


def test_search_returns_only_the_users_own_messages(store: ProfileStore) -> None:
    _fill_near_identical(store, 60)
    for number in [0, 17, 59]:
        user = f"user{number:03d}"
        own = {m.message_id for m in store.messages(user)}
        hits = store.search(user, "How do I sharpen a kitchen knife properly?", k=10)
        assert {hit.message_id for hit in hits} == own
        assert hits[0].text.startswith("How do I sharpen") and hits[0].score > hits[1].score


def test_search_isolation_with_the_real_embedder(real_store: ProfileStore) -> None:
    _fill_near_identical(real_store, 25)
    hits = real_store.search("user007", "sharpening knives", k=5)
    assert [hit.text for hit in hits] == [
        "How do I sharpen a kitchen knife properly? (7)",
        "What's a good recipe for sourdough bread? (7)",
    ]
    assert hits[0].score > 0.5


def test_search_sees_messages_written_by_another_store_instance(db_url: str) -> None:
    with (
        ProfileStore(db_url, embedder=HashingEmbedder()) as reader,
        ProfileStore(db_url, embedder=HashingEmbedder()) as writer,
    ):
        writer.add_message("alice", "user", "first message about violins")
        assert [h.text for h in reader.search("alice", "violins", k=3)] == ["first message about violins"]
        writer.add_message("alice", "user", "second message about violins")
        assert len(reader.search("alice", "violins", k=3)) == 2


def test_an_older_index_file_is_caught_up_without_a_rebuild(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        store.add_message("alice", "user", "cats are great")
        store.search("alice", "cats")  # builds and writes the index file
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        store.add_message("alice", "user", "cats and dogs")  # the file is now one generation behind
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        monkeypatch.setattr(store, "rebuild_index", lambda: pytest.fail("an intact, older index was rebuilt"))
        assert {h.text for h in store.search("alice", "cats", k=5)} == {"cats are great", "cats and dogs"}


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip_bytes", "garbage"])
def test_a_missing_or_corrupt_index_file_is_rebuilt(db_path: Path, damage: str) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        _fill_near_identical(store, 5)
        expected = [h.message_id for h in store.search("user003", "sourdough recipe", k=2)]
    index_file = Path(f"{db_path}.faiss")
    data = index_file.read_bytes()
    if damage == "delete":
        index_file.unlink()
    elif damage == "truncate":
        index_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip_bytes":
        index_file.write_bytes(data[:-200] + bytes(b ^ 0xFF for b in data[-200:]))
    else:
        index_file.write_bytes(b"not an index at all")
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        assert [h.message_id for h in store.search("user003", "sourdough recipe", k=2)] == expected
    assert EmbeddingIndex.read_header(index_file) is not None  # a fresh, valid file replaced the damaged one


def test_an_index_file_from_another_store_is_not_trusted(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "a.db", embedder=HashingEmbedder()) as store_a:
        store_a.add_message("alice", "user", "alice talks about tea")
        store_a.search("alice", "tea")
    with ProfileStore(tmp_path / "b.db", embedder=HashingEmbedder()) as store_b:
        store_b.add_message("alice", "user", "a different alice talks about coffee")
    # Put store A's index where store B expects its own: same user id, same message ids, other content.
    Path(f"{tmp_path / 'b.db'}.faiss").write_bytes(Path(f"{tmp_path / 'a.db'}.faiss").read_bytes())
    with ProfileStore(tmp_path / "b.db", embedder=HashingEmbedder()) as store_b:
        hits = store_b.search("alice", "tea", k=5)
        assert [h.text for h in hits] == ["a different alice talks about coffee"]
        assert hits[0].score < 0.5  # scored with B's own vector, not A's "tea" vector


def test_an_index_older_than_a_deletion_is_rebuilt(db_path: Path) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder()) as first:
        first.add_message("alice", "user", "secret plans about the garden")
        first.add_message("bob", "user", "bob's garden")
        first.search("bob", "garden")  # first now holds a loaded index containing alice
        with ProfileStore(db_path, embedder=HashingEmbedder()) as second:
            second.forget("alice")
            second.add_message("alice", "user", "a new alice, nothing about gardens")
        hits = first.search("alice", "secret plans about the garden", k=5)
        assert [h.text for h in hits] == ["a new alice, nothing about gardens"]


def test_switching_embedders_embeds_the_history_again(db_path: Path) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder(256)) as store:
        store.add_messages("alice", [("user", "violin lessons", None), ("user", "tax forms", None)])
    with ProfileStore(db_path, embedder=HashingEmbedder(64)) as store:  # another name, another dim
        assert [h.text for h in store.search("alice", "violin", k=1)] == ["violin lessons"]
        assert store.preferences("alice").dimensions.keys() == {"expertise", "verbosity", "tone"}
    with sqlite3.connect(db_path) as connection:
        counts = dict(connection.execute("SELECT embedder, count(*) FROM message_embeddings GROUP BY embedder"))
    assert counts == {"hashing-v1-256": 2, "hashing-v1-64": 2}


def test_forget_leaves_no_trace(db_path: Path) -> None:
    marker = "zebra-quokka-4711"
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        first = store.add_message("alice", "user", f"my secret is {marker}")
        store.add_message("alice", "assistant", f"noted: {marker}", conversation_id=first.conversation_id)
        store.add_feedback("alice", prompt=f"about {marker}", chosen=f"yes {marker}", rejected="no")
        store.set_preference("alice", "tone", "formal")
        store.save_reward_head("alice", f"head-{marker}", marker.encode(), {"note": marker})
        store.add_message("bob", "user", "bob stays")
        assert store.search("alice", marker)  # the index now holds alice's vectors
        alice_pk = store.user_key("alice")
        report = store.forget("alice")
        assert report.deleted == {
            "conversations": 1,
            "messages": 2,
            "embeddings": 2,
            "feedback": 1,
            "preferences": 1,
            "reward_heads": 1,
            "key_bindings": 0,
        }
        assert report.index_entries == 2 and report.index_file == "rewritten"
        assert not store.has_user("alice") and store.search("alice", marker) == []
        assert [h.text for h in store.search("bob", "bob")] == ["bob stays"]
    index = EmbeddingIndex.load(Path(f"{db_path}.faiss"), EmbeddingIndex.read_header(Path(f"{db_path}.faiss")))
    assert index is not None and index.count_user(alice_pk) == 0 and index.ntotal == 1
    for path in db_path.parent.iterdir():  # the database, its WAL and the index: no byte of alice's text left
        assert marker.encode() not in path.read_bytes(), path.name


def test_forget_deletes_an_index_file_it_has_not_loaded(db_path: Path) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        store.add_message("alice", "user", "alice's words")
        store.add_message("bob", "user", "bob's words")
        store.search("bob", "words")  # writes the index file, with alice's vectors in it
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        alice_pk = store.user_key("alice")
        assert store.forget("alice").index_file == "deleted"
        assert not Path(f"{db_path}.faiss").exists()
        assert [h.text for h in store.search("bob", "words", k=5)] == ["bob's words"]
    index_file = Path(f"{db_path}.faiss")
    index = EmbeddingIndex.load(index_file, EmbeddingIndex.read_header(index_file))
    assert index is not None and index.count_user(alice_pk) == 0 and index.ntotal == 1


def test_export_then_import_round_trips_losslessly(store: ProfileStore) -> None:
    first = store.add_message("alice", "user", "I'd like formal answers, please.")
    answer = store.add_message("alice", "assistant", "Certainly.", conversation_id=first.conversation_id)
    store.add_message("alice", "user", "Another conversation")
    store.new_conversation("alice", title="empty one")
    store.add_feedback("alice", prompt="p", rating=0.5, message_id=answer.message_id)
    store.add_feedback("alice", prompt="q", chosen="short", rejected="long")
    store.set_preference("alice", "verbosity", "concise")
    store.save_reward_head("alice", "bt", bytes(range(256)), {"epochs": 3})
    exported = store.export_user("alice")
    store.forget("alice")
    store.add_message("bob", "user", "bob shifts the ids")
    store.import_user(exported)
    assert store.export_user("alice") == exported
    assert [h.text for h in store.search("alice", "formal answers", k=1)] == ["I'd like formal answers, please."]
    store.import_user(exported, user_id="alice2")
    assert store.export_user("alice2").model_copy(update={"user_id": "alice"}) == exported


def test_postgresql_retrieval_runs_in_sql_with_pgvector(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (set PANDA_CHAT_TEST_DATABASE_URL)")
    with ProfileStore(db_url, embedder=HashingEmbedder()) as store:
        _fill_near_identical(store, 20)
        hits = store.search("user005", "How do I sharpen a kitchen knife properly?", k=5)
        assert {hit.message_id for hit in hits} == {m.message_id for m in store.messages("user005")}
        assert hits[0].text.startswith("How do I sharpen")
        assert store._index_cache.index is None  # no faiss index was built: the database ranked the vectors
        with store._engine.connect() as connection:
            indexes = (
                connection.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'message_embeddings'")
                .scalars()
                .all()
            )
            copied = connection.exec_driver_sql(
                "SELECT count(*) FROM message_embeddings WHERE embedding IS NOT NULL"
            ).scalar()
        assert any("USING hnsw" in definition for definition in indexes)
        assert copied == 2  # only the searched user's vectors were copied into the vector column so far
