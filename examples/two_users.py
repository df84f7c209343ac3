"""One process, one ChatPanda, two users: their answers diverge as their histories differ.

    python examples/two_users.py                  # the embedded demo model, a throw-away profile database

Alice and Bob start with empty profiles, so the same question gets the same answer. Then each of them chats for a
few turns in their own style (every turn is recorded in their profile), and the store infers what each prefers.
Asked the same question again, in one batched decode, they now get answers steered toward their own preferences.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from panda_chat import ChatPanda
from profiles import ProfileStore

QUESTION = "How does a bicycle stay upright?"
HISTORIES = {
    "alice": [
        "I'm new to this, can you explain it like I'm five?",
        "Please keep it simple, I'm a complete beginner.",
        "Sorry if this is a dumb question, what does that word even mean?",
    ],
    "bob": [
        "Skip the basics, I've been doing this professionally for ten years.",
        "Give me the rigorous version, with the relevant theorems and edge cases.",
        "Walk me through every step and why it works, I want the long version.",
    ],
}


def ask_both(llm: ChatPanda, question: str) -> dict[str, object]:
    """Both users' answers to ``question`` in one padded decode (each row steered for its own user)."""
    users = list(HISTORIES)
    answers = llm.batch([question] * len(users), config=[{"configurable": {"user_id": u}} for u in users])
    return dict(zip(users, answers, strict=True))


def steering(answer) -> str:
    poles = [s for s in answer.response_metadata["personalization"]["steering"] if s["weight"] > 0]
    return ", ".join(f"{s['pole']} {s['weight']:.2f}" for s in poles) or "not steered"


def main(model: str | None, db: str, embedder: str | None, max_tokens: int) -> None:
    store = ProfileStore(db, embedder=embedder)
    # One ChatPanda with its defaults serves everyone; the user is picked per call, and every turn is recorded
    # (the turn being answered never drowns the history it is steered by).
    llm = ChatPanda(model=model, store=store, max_tokens=max_tokens)

    before = ask_both(llm, QUESTION)
    for user, answer in before.items():
        print(f"[before] {user}: {answer.content!r} ({steering(answer)})")

    for user, messages in HISTORIES.items():
        for text in messages:
            llm.invoke(text, config={"configurable": {"user_id": user}})

    after = ask_both(llm, QUESTION)
    for user, answer in after.items():
        print(f"[after]  {user}: {answer.content!r} ({steering(answer)})")
        top = {
            d: v["top_pole"]
            for d, v in answer.response_metadata["personalization"]["dimensions"].items()
            if v["confidence"] > 0
        }
        print(f"         inferred: {top}")
    print(f"same answer before: {before['alice'].content == before['bob'].content}")
    print(f"same answer after:  {after['alice'].content == after['bob'].content}")
    store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("PANDA_CHAT_EXAMPLE_MODEL"),
        help="chat model folder [default: the embedded demo model]",
    )
    parser.add_argument("--db", default=None, help="profile database [default: a temporary file]")
    parser.add_argument(
        "--embedder",
        default=os.environ.get("PANDA_CHAT_EMBEDDER"),
        help="'hashing' or a sentence-transformers path [default: all-MiniLM-L6-v2, packaged]",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        main(args.model, args.db or str(Path(scratch) / "profiles.db"), args.embedder, args.max_tokens)
