"""ChatPanda in LangGraph: the user from the graph's config in every entry point, threads as stored conversations."""

from __future__ import annotations

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import HumanMessage
from langchain_core.runnables.history import RunnableWithMessageHistory
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from panda_chat.chat_model import ChatPanda
from profiles import ProfileStore


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "profiles.db", embedder="hashing") as opened:
        yield opened


@pytest.fixture
def llm(tiny_models, store):
    return ChatPanda(model=str(tiny_models.base), store=store, max_tokens=4, device="cpu")


def chatbot(llm, checkpointer=None):
    def respond(state: MessagesState):
        return {"messages": [llm.invoke(state["messages"])]}  # the quick-start pattern: no config passed on

    graph = StateGraph(MessagesState)
    graph.add_node("respond", respond)
    graph.add_edge(START, "respond")
    return graph.compile(checkpointer=checkpointer)


def rows(store, user):
    return [(m.conversation_id, m.role, m.text) for m in store.messages(user)]


def test_a_checkpointed_thread_is_one_conversation_without_duplicates(llm, store):
    graph = chatbot(llm, InMemorySaver())
    config = {"configurable": {"user_id": "kim", "thread_id": "t-1"}}
    for question in ["Hello there", "Tell me about rivers", "And about lakes?"]:
        answer = graph.invoke({"messages": [HumanMessage(question)]}, config)["messages"][-1]
        assert answer.response_metadata["user_id"] == "kim"
    stored = rows(store, "kim")
    assert len(stored) == 6 and len({conversation for conversation, _, _ in stored}) == 1
    assert [role for _, role, _ in stored] == ["user", "assistant"] * 3
    assert store.conversation_for_key("kim", "t-1", create=False) == stored[0][0]
    assert not store.has_user("default")  # nobody else's profile was touched


def test_the_same_thread_id_for_two_users_is_two_conversations_and_forget_takes_them(llm, store):
    # two apps (two checkpointers: a LangGraph thread id is global to its checkpointer) with the same thread id
    chatbot(llm, InMemorySaver()).invoke(
        {"messages": [HumanMessage("hi")]}, {"configurable": {"user_id": "kim", "thread_id": "shared"}}
    )
    chatbot(llm, InMemorySaver()).invoke(
        {"messages": [HumanMessage("hey")]}, {"configurable": {"user_id": "lee", "thread_id": "shared"}}
    )
    kim, lee = (store.conversation_for_key(u, "shared", create=False) for u in ("kim", "lee"))
    assert kim != lee and next(text for _, _, text in rows(store, "lee")) == "hey"
    store.forget("kim")
    assert store.conversation_for_key("kim", "shared", create=False) is None
    assert store.conversation_for_key("lee", "shared", create=False) == lee


@pytest.mark.asyncio
async def test_the_graph_user_reaches_the_model_in_every_entry_point(llm, store):
    seen = []

    async def respond(state: MessagesState):
        messages = state["messages"]
        seen.append(llm.invoke(messages).response_metadata["user_id"])
        seen.append((await llm.ainvoke(messages)).response_metadata["user_id"])
        seen.extend(m.response_metadata["user_id"] for m in llm.batch([messages, messages]))
        seen.extend(m.response_metadata["user_id"] for m in await llm.abatch([messages]))
        last = list(llm.stream(messages))[-1]
        seen.append(last.response_metadata["user_id"])
        async for chunk in llm.astream(messages):
            if chunk.response_metadata.get("user_id"):
                seen.append(chunk.response_metadata["user_id"])
        return {"messages": []}

    graph = StateGraph(MessagesState)
    graph.add_node("respond", respond)
    graph.add_edge(START, "respond")
    await graph.compile().ainvoke({"messages": [HumanMessage("hi")]}, {"configurable": {"user_id": "kim"}})
    assert seen == ["kim"] * 7


def test_a_bad_user_in_the_graph_config_is_an_error_not_someone_else(llm):
    with pytest.raises(ValueError, match="user_id"):
        chatbot(llm).invoke({"messages": [HumanMessage("hi")]}, {"configurable": {"user_id": ""}})


def test_runnable_with_message_history_stores_each_turn_once(llm, store):
    histories: dict[str, InMemoryChatMessageHistory] = {}
    chain = RunnableWithMessageHistory(llm, lambda session: histories.setdefault(session, InMemoryChatMessageHistory()))
    config = {"configurable": {"session_id": "s-9", "user_id": "ana"}}
    for question in ["one", "two", "three"]:
        chain.invoke([HumanMessage(question)], config)
    stored = rows(store, "ana")
    assert len(stored) == 6 and len({c for c, _, _ in stored}) == 1


def test_a_string_conversation_id_and_replayed_histories_without_any_id(llm, store):
    first = llm.invoke("hello", conversation_id="thread-abc", user_id="bo")
    again = llm.invoke([HumanMessage("hello"), first, HumanMessage("more")], conversation_id="thread-abc", user_id="bo")
    assert first.response_metadata["conversation_id"] == again.response_metadata["conversation_id"]
    history = [HumanMessage("new topic")]
    history.append(llm.invoke(history, user_id="cy"))
    history.append(HumanMessage("go on"))
    llm.invoke(history, user_id="cy")  # no id: the replayed history continues the latest conversation
    stored = rows(store, "cy")
    assert [text for _, _, text in stored][:1] == ["new topic"] and len(stored) == 4
    assert len({c for c, _, _ in stored}) == 1
