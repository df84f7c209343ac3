"""A LangChain chain with ChatPanda: prompt template -> personalised model -> output parser.

    python examples/chain.py                      # the embedded demo model, a throw-away profile database
    python examples/chain.py --model ./my-model   # any local chat model folder

The same chain answers two users: alice has told the store she wants concise answers, bob wants detailed ones.
The chain itself never mentions users: the user is chosen per call in the run config, and ChatPanda steers the
decoding with that user's preferences. A second chain parses a structured answer into a pydantic object.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field

from panda_chat import ChatPanda
from profiles import ProfileStore


class Recipe(BaseModel):
    """A dish and how long it takes."""

    dish: str = Field(description="the name of the dish")
    minutes: int = Field(description="preparation time in minutes")


def main(model: str | None, db: str, embedder: str | None, max_tokens: int) -> None:
    store = ProfileStore(db, embedder=embedder)
    store.set_preference("alice", "verbosity", "concise")
    store.set_preference("bob", "verbosity", "detailed")

    llm = ChatPanda(model=model, store=store, max_tokens=max_tokens)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a helpful cooking assistant."),
            ("human", "How do I make {dish}?"),
        ]
    )
    chain = prompt | llm | StrOutputParser()

    for user in ("alice", "bob"):
        answer = chain.invoke({"dish": "a simple soup"}, config={"configurable": {"user_id": user}})
        print(f"--- {user} ---\n{answer}\n")

    recipe_chain = prompt | llm.with_structured_output(Recipe)
    recipe = recipe_chain.invoke({"dish": "bread dough"}, config={"configurable": {"user_id": "alice"}})
    print(f"structured: {recipe!r}")
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
