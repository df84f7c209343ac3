"""``forget`` is final: nothing of the user stays in any file, a busy reader makes it fail (not lie), and a write
that was already running when the user was forgotten cannot bring them back."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from panda_chat.cli import main
from profiles import (
    CallableEmbedder,
    ForgetIncompleteError,
    HashingEmbedder,
    ProfileStore,
    UserForgottenError,
    parse_history,
)

SECRET = "my-bank-pin-is-80417-zebra"


def _files(db_path: Path) -> list[Path]:
    return [path for path in db_path.parent.iterdir() if path.name.startswith(db_path.name)]


def _on_disk(db_path: Path, needle: str) -> list[str]:
    """Every file of the store (database, WAL, index cache) whose bytes contain ``needle``."""
    return [path.name for path in _files(db_path) if needle.encode() in path.read_bytes()]


def test_forget_leaves_no_plaintext_in_any_file(store: ProfileStore, db_path: Path) -> None:
    store.add_messages("alice", [("user", f"remember {SECRET} for me", None), ("assistant", "noted", None)])
    store.add_feedback("alice", prompt=SECRET, response="ok", rating=1.0)
    store.add_message("bob", "user", "bob's own words")
    store.search("alice", "bank pin")  # the index cache file now exists
    on_sqlite = store._engine.dialect.name == "sqlite"  # the files checked are SQLite's (PostgreSQL: rows only)
    if on_sqlite:
        assert _on_disk(db_path, SECRET)  # the check can fail: the text was on disk

    report = store.forget("alice")

    assert report.deleted["messages"] == 2 and report.deleted["feedback"] == 1
    assert not store.has_user("alice") and store.search("alice", "bank pin") == []
    if on_sqlite:
        assert report.wal == "truncated"
        assert _on_disk(db_path, SECRET) == [] and _on_disk(db_path, "alice") == []
    assert [hit.text for hit in store.search("bob", "words")] == ["bob's own words"]


def test_forget_under_a_reader_fails_with_what_to_retry_then_scrub_finishes(db_path: Path) -> None:
    store = ProfileStore(db_path, embedder=HashingEmbedder(), forget_wait_s=0.2)
    store.add_message("alice", "user", f"secret {SECRET}")
    reader = sqlite3.connect(db_path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # an open read transaction on the old snapshot
    try:
        with pytest.raises(ForgetIncompleteError, match=r"profile scrub"):
            store.forget("alice")
        assert not store.has_user("alice")  # the rows are gone; only old pages may remain
    finally:
        reader.rollback()
        reader.close()
    assert store.scrub() == "truncated"
    assert _on_disk(db_path, SECRET) == []
    store.close()


def test_cli_forget_under_a_reader_exits_non_zero(db_path: Path) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        store.add_message("alice", "user", SECRET)
    reader = sqlite3.connect(db_path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()
    try:
        result = CliRunner().invoke(
            main,
            ["profile", "--db", str(db_path), "--embedder", "hashing", "forget", "alice", "--yes", "--wait", "0.2"],
        )
    finally:
        reader.rollback()
        reader.close()
    assert result.exit_code == 1
    assert "profile scrub" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["profile", "--db", str(db_path), "scrub"])
    assert result.exit_code == 0 and "WAL emptied" in result.output
    assert _on_disk(db_path, SECRET) == []


class _GatedEmbedder:
    """Hashing vectors, but ``encode`` of a large batch waits until the test opens the gate: an import that is
    still embedding while the user is forgotten."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder()
        self.name, self.dim = "gated", self.inner.dim
        self.started, self.gate = threading.Event(), threading.Event()

    def encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) > 3:
            self.started.set()
            assert self.gate.wait(30)
        return self.inner.encode(texts)


def test_an_import_still_embedding_cannot_bring_a_forgotten_user_back(db_path: Path) -> None:
    embedder = _GatedEmbedder()
    store = ProfileStore(db_path, embedder=embedder)
    store.add_message("alice", "user", "first words")
    lines = parse_history([f'{{"role": "user", "text": "{SECRET} number {i}"}}' for i in range(50)])
    outcome: list[BaseException | None] = []

    def run_import() -> None:
        try:
            store.import_history("alice", lines)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=run_import)
    worker.start()
    assert embedder.started.wait(30)
    store.forget("alice")  # while the import embeds
    embedder.gate.set()
    worker.join(30)

    assert len(outcome) == 1 and isinstance(outcome[0], UserForgottenError), outcome
    assert not store.has_user("alice")
    assert _on_disk(db_path, SECRET) == []
    store.close()


def test_feedback_for_a_user_forgotten_meanwhile_is_refused(db_url: str) -> None:
    calls = {"n": 0}
    store_box: list[ProfileStore] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2:  # the feedback's embedding (the first call is the dimension probe)
            store_box[0].forget("alice")
        return HashingEmbedder().encode(texts)

    store = ProfileStore(db_url, embedder=CallableEmbedder(embed, name="forgetting"))
    store_box.append(store)
    with store.__class__(db_url, embedder=HashingEmbedder()) as other:
        other.create_user("alice")
    with pytest.raises(UserForgottenError):
        store.add_feedback("alice", prompt="q", response="a", rating=1.0)
    assert not store.has_user("alice")
    store.close()


def test_a_legacy_invalid_id_can_be_listed_and_forgotten_by_key(db_path: Path) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        store.create_user("ok")
    raw = sqlite3.connect(db_path)  # an id stored by an older version, before ids were validated
    raw.execute("INSERT INTO users (name, created_at) VALUES (?, '2024-01-01 00:00:00')", ("bad\x00id",))
    raw.commit()
    raw.close()
    runner = CliRunner()
    listed = runner.invoke(main, ["profile", "--db", str(db_path), "list"])
    assert listed.exit_code == 0 and "'bad\\x00id'" in listed.output and "--key" in listed.output
    users = runner.invoke(main, ["profile", "--db", str(db_path), "list", "--json"])
    import json

    key = next(user["key"] for user in json.loads(users.output) if user["user_id"] == "bad\x00id")
    result = runner.invoke(main, ["profile", "--db", str(db_path), "forget", "--key", str(key), "--yes"])
    assert result.exit_code == 0, result.output
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        assert [user.user_id for user in store.list_users()] == ["ok"]


def test_forget_removes_the_id_from_api_keys_too(store: ProfileStore, db_path: Path) -> None:
    from profiles.keys import ApiKeys

    keys = ApiKeys(store.url)  # the store's own database, SQLite or PostgreSQL
    keys.create("backend", users=["zed-the-user", "bob"])
    store.add_message("zed-the-user", "user", "hello")
    report = store.forget("zed-the-user")
    assert report.deleted["key_bindings"] == 1
    assert [key.users for key in keys.list()] == [["bob"]]
    keys.close()
    if store._engine.dialect.name == "sqlite":  # the files checked are SQLite's
        store.scrub()
        assert _on_disk(db_path, "zed-the-user") == []


def test_a_reward_head_trained_while_the_user_was_forgotten_is_not_saved(store: ProfileStore) -> None:
    store.add_message("alice", "user", "hi")
    key = store.user_key("alice")  # read before the (long) training
    store.forget("alice")
    with pytest.raises(UserForgottenError):
        store.save_reward_head("alice", "feedback", b"head bytes", expected_key=key)
    assert not store.has_user("alice")
