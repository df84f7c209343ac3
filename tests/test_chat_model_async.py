"""Cancelling a call frees the model at once; a LangChain cache never answers from a profile that has changed."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.caches import InMemoryCache

from panda_chat.chat_model import ChatPanda, StreamEnd
from profiles import ProfileStore


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "profiles.db", embedder="hashing") as opened:
        yield opened


@pytest.mark.asyncio
async def test_cancelling_ainvoke_stops_the_decode_within_a_step_and_frees_the_model(tiny_models, store):
    llm = ChatPanda(model=str(tiny_models.base), store=store, user_id="kim", max_tokens=400, device="cpu")
    runtime = llm._runtime(llm._options(None, {}))
    model = runtime.decoder.model
    steps = []
    hook = model.get_output_embeddings().register_forward_hook(lambda *args: steps.append(1))  # once a step
    try:
        task = asyncio.create_task(llm.ainvoke("Tell me a very long story"))
        for _ in range(3000):  # until decoding has started
            if len(steps) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        at_cancel = len(steps)

        def take_and_give_back() -> bool:
            if not runtime.lock.acquire(timeout=30):
                return False
            runtime.lock.release()
            return True

        assert await asyncio.to_thread(take_and_give_back)  # the model is free again
        assert len(steps) - at_cancel <= 2 and len(steps) < 100  # one step more at most, far from 400 tokens
        await asyncio.sleep(0.2)
        assert len(steps) - at_cancel <= 2
    finally:
        hook.remove()


def test_the_cache_key_carries_the_profile_version(tiny_models, store):
    cache = InMemoryCache()
    llm = ChatPanda(
        model=str(tiny_models.base), store=store, user_id="kim", max_tokens=4, device="cpu", record=False, cache=cache
    )
    first = llm.invoke("Explain rivers")
    assert llm.invoke("Explain rivers").content == first.content
    hits = len(cache._cache)
    store.set_preference("kim", "expertise", "expert")  # the profile changed: the old answer must not be served
    llm.invoke("Explain rivers")
    assert len(cache._cache) == hits + 1
    keys = {key[1] for key in cache._cache}
    assert len(keys) == 2 and all("kim@" in key for key in keys)


@pytest.mark.asyncio
async def test_astream_text_streams_what_astream_streams_and_records_the_answer_once(tiny_models, store):
    llm = ChatPanda(model=str(tiny_models.base), store=store, user_id="kim", max_tokens=12, device="cpu")
    store.set_preference("kim", "tone", "formal")
    chunks = [chunk async for chunk in llm.astream("Explain rivers", user_id="kim", conversation_id="a")]
    items = [item async for item in llm.astream_text("Explain rivers", user_id="kim", conversation_id="b")]
    pieces, end = items[:-1], items[-1]
    assert isinstance(end, StreamEnd) and all(isinstance(piece, str) and piece for piece in pieces)
    assert "".join(pieces) == "".join(chunk.content for chunk in chunks)  # greedy: the same answer
    last = chunks[-1]
    assert end.usage == last.usage_metadata
    assert end.metadata["finish_reason"] == last.response_metadata["finish_reason"]
    assert end.metadata["personalization"] == last.response_metadata["personalization"]
    stored = store.conversation_messages(end.metadata["conversation_id"])
    assert [(m.role, m.text) for m in stored] == [("user", "Explain rivers"), ("assistant", "".join(pieces))]


@pytest.mark.asyncio
async def test_astream_text_refuses_tools_and_response_formats(tiny_models, store):
    llm = ChatPanda(model=str(tiny_models.base), store=store, max_tokens=4, device="cpu")
    with pytest.raises(ValueError, match="plain text only"):
        [item async for item in llm.astream_text("hi", response_format={"type": "object"})]
