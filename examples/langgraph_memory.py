"""A LangGraph chatbot with memory: a checkpointer keeps each thread, ``PandaStore`` is the long-term memory, and
both live in the user's profile.

    python examples/langgraph_memory.py           # the embedded demo model, a throw-away profile database

Each thread (``configurable.thread_id``) is one stored conversation, however often the graph replays it. The
"remember" node writes what the user says about themselves as a memory in their namespace; the "respond" node reads
the memories most related to the question (the store's user-scoped retrieval) into the system prompt, and ChatPanda
answers steered by the same profile, which those memories now shape.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_config
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.store.base import BaseStore

from panda_chat import ChatPanda
from panda_chat.langgraph import PandaStore
from profiles import ProfileStore


def build_graph(llm: ChatPanda, memory: PandaStore):
    def remember(state: MessagesState, *, store: BaseStore):
        user = get_config()["configurable"]["user_id"]
        text = state["messages"][-1].content
        if text.lower().startswith(("i am", "i'm", "i work", "i like", "i love")):
            store.put(("users", user, "memories"), uuid.uuid4().hex[:8], {"text": text})
        return {}

    def respond(state: MessagesState, *, store: BaseStore):
        user = get_config()["configurable"]["user_id"]
        question = state["messages"][-1].content
        known = store.search(("users", user, "memories"), query=question, limit=3)
        notes = "; ".join(item.value["text"] for item in known) or "nothing yet"
        system = SystemMessage(f"What you know about the user: {notes}")
        return {"messages": [llm.invoke([system, *state["messages"]])]}

    graph = StateGraph(MessagesState)
    graph.add_node("remember", remember)
    graph.add_node("respond", respond)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "respond")
    return graph.compile(checkpointer=InMemorySaver(), store=memory)


def main(model: str | None, db: str, embedder: str | None, max_tokens: int) -> None:
    store = ProfileStore(db, embedder=embedder)
    llm = ChatPanda(model=model, store=store, max_tokens=max_tokens)
    memory = PandaStore(store)
    graph = build_graph(llm, memory)
    config = {"configurable": {"user_id": "erin", "thread_id": "erin-1"}}
    for text in ["I am a physicist working on lasers", "I love detailed explanations", "How does a laser work?"]:
        answer = graph.invoke({"messages": [HumanMessage(text)]}, config)["messages"][-1]
        print(f"erin: {text}\nbot:  {answer.content!r}")
    thread = answer.response_metadata["conversation_id"]
    print(f"memories: {[item.value['text'] for item in memory.search(('users', 'erin', 'memories'))]}")
    print(f"thread turns stored: {len(store.conversation_messages(thread))}")
    inferred = {name: dim.top_pole for name, dim in store.preferences("erin").dimensions.items()}
    print(f"inferred: {inferred}")
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
