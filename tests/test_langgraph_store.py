"""PandaStore: LangGraph's BaseStore over the profile store (per-user namespaces, preferences, memories)."""

from __future__ import annotations

import pytest

from panda_chat.langgraph import PandaStore
from profiles import ProfileStore


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "profiles.db", embedder="hashing") as opened:
        yield opened


def test_preferences_are_the_explicit_settings(store):
    memory = PandaStore(store)
    memory.put(("users", "kim", "preferences"), "expertise", {"pole": "expert"})
    assert store.explicit_preferences("kim") == {"expertise": "expert"}
    assert memory.get(("users", "kim", "preferences"), "expertise").value == {"pole": "expert"}
    assert store.preferences("kim").dimensions["expertise"].top_pole == "expert"
    memory.delete(("users", "kim", "preferences"), "expertise")
    assert store.explicit_preferences("kim") == {}
    with pytest.raises(Exception, match=r"pole|dimension"):
        memory.put(("users", "kim", "preferences"), "expertise", {"pole": "wizard"})


def test_memories_are_the_users_messages_and_searchable_only_in_their_namespace(store):
    memory = PandaStore(store)
    memory.put(("users", "kim", "memories"), "job", {"text": "I work as a physicist on quantum optics"})
    memory.put(("users", "kim", "memories"), "food", {"text": "I love baking sourdough bread"})
    memory.put(("users", "lee", "memories"), "job", {"text": "I am a quantum physicist too"})
    assert memory.get(("users", "kim", "memories"), "job").value == {"text": "I work as a physicist on quantum optics"}
    hits = memory.search(("users", "kim", "memories"), query="quantum physics work", limit=5)
    assert {hit.key for hit in hits} == {"job", "food"} and hits[0].key == "job" and hits[0].score is not None
    assert all("too" not in hit.value["text"] for hit in hits)  # never another user's memory
    assert "I love baking sourdough bread" in [m.text for m in store.messages("kim")]  # the profile reads it
    memory.put(("users", "kim", "memories"), "job", {"text": "I now teach school children"})
    assert memory.get(("users", "kim", "memories"), "job").value["text"] == "I now teach school children"
    assert "I work as a physicist on quantum optics" not in [m.text for m in store.messages("kim")]
    memory.delete(("users", "kim", "memories"), "food")
    assert memory.get(("users", "kim", "memories"), "food") is None
    assert [hit.key for hit in memory.search(("users", "kim", "memories"), query="bread")] == ["job"]
    store.forget("kim")
    assert memory.get(("users", "kim", "memories"), "job") is None
    assert memory.search(("users", "kim"), query="teach") == []


def test_namespaces_and_bad_input(store):
    memory = PandaStore(store)
    memory.put(("users", "kim", "memories"), "a", {"text": "hello there"})
    assert ("users", "kim", "memories") in memory.list_namespaces(prefix=("users", "kim"))
    with pytest.raises(ValueError, match="namespaces are"):
        memory.put(("kim", "memories"), "a", {"text": "x"})
    with pytest.raises(ValueError, match="memory item is"):
        memory.put(("users", "kim", "memories"), "a", {"text": "x", "extra": 1})
    with pytest.raises(ValueError, match="cannot be empty"):  # LangGraph refuses the empty label first
        memory.get(("users", "", "memories"), "a")


@pytest.mark.asyncio
async def test_async_api(store):
    memory = PandaStore(store)
    await memory.aput(("users", "kim", "memories"), "a", {"text": "likes tea"})
    assert (await memory.aget(("users", "kim", "memories"), "a")).value == {"text": "likes tea"}
