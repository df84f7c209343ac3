"""Several processes writing to one store (SQLite, or PostgreSQL when configured) at once lose no message."""

from __future__ import annotations

import multiprocessing

from profiles import HashingEmbedder, ProfileStore

WRITERS = 4
MESSAGES_EACH = 25


def _write(db_path: str, writer: int) -> None:
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        conversation = None
        for number in range(MESSAGES_EACH):
            # Alternate shared and own users, and single messages with small batches.
            user = "shared" if number % 2 else f"writer{writer}"
            if number % 5 == 0:
                store.add_messages(
                    user,
                    [("user", f"w{writer} batch {number} a", None), ("assistant", f"w{writer} batch {number} b", None)],
                )
            else:
                message = store.add_message(
                    user,
                    "user",
                    f"w{writer} message {number}",
                    conversation_id=conversation if user == "shared" else None,
                )
                if user == "shared":
                    conversation = message.conversation_id
            if number == MESSAGES_EACH // 2:
                store.search(user, "message")  # readers interleaved with writers


def test_concurrent_writers_from_several_processes_lose_no_message(db_url: str) -> None:
    """The writers also race to create and migrate the database: exactly one applies the migrations."""
    db_path = db_url
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write, args=(db_path, writer)) for writer in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WRITERS
    with ProfileStore(db_path, embedder=HashingEmbedder()) as store:
        texts = [m.text for user in store.list_users() for m in store.messages(user.user_id)]
        batches = len(range(0, MESSAGES_EACH, 5))
        assert len(texts) == len(set(texts)) == WRITERS * (MESSAGES_EACH + batches)
        for writer in range(WRITERS):
            assert f"w{writer} message {MESSAGES_EACH - 1}" in texts
        # Every stored message is embedded and searchable by its owner.
        hits = store.search("shared", "w3 message 1", k=1000)
        assert len(hits) == len(store.messages("shared"))


def test_one_store_shared_by_threads_stays_consistent(store: ProfileStore) -> None:
    """ChatPanda shares one store between threads: interleaved writes and searches neither lose messages nor
    duplicate index entries."""
    from concurrent.futures import ThreadPoolExecutor

    def work(thread: int) -> None:
        for number in range(15):
            store.add_message("shared", "user", f"thread {thread} says {number}")
            store.search("shared", f"thread {thread}", k=3)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(4)))
    hits = store.search("shared", "thread says", k=500)
    assert len(hits) == len({hit.message_id for hit in hits}) == len(store.messages("shared")) == 60
