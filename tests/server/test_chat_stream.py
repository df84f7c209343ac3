"""ChatPanda's async stream as the server uses it: pieces straight from the scheduler, recording in few writes."""

from __future__ import annotations

import asyncio

import pytest

from panda_chat.chat_model import ChatPanda
from profiles import ProfileStore


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "profiles.db", embedder="hashing") as opened:
        yield opened


@pytest.mark.asyncio
async def test_concurrent_streams_of_several_users_each_get_their_own_answer_and_turns(tiny_models, store):
    llm = ChatPanda(model=str(tiny_models.base), store=store, max_tokens=12, device="cpu")
    questions = {f"user{i}": f"Question number {i}: what is rain?" for i in range(6)}
    alone = {user: (await llm.ainvoke(q, user_id=f"{user}-alone")).content for user, q in questions.items()}

    async def stream(user: str) -> tuple[str, dict]:
        chunks = [chunk async for chunk in llm.astream(questions[user], user_id=user)]
        return "".join(chunk.content for chunk in chunks), chunks[-1].response_metadata

    results = dict(zip(questions, await asyncio.gather(*(stream(user) for user in questions)), strict=True))
    for user, (text, metadata) in results.items():
        assert text == alone[user]  # greedy: batched with the others or alone, the same answer
        assert metadata["user_id"] == user
        stored = store.conversation_messages(metadata["conversation_id"])
        assert [(m.role, m.text) for m in stored] == [("user", questions[user]), ("assistant", text)]
        assert {m.conversation_id for m in store.messages(user)} == {metadata["conversation_id"]}


@pytest.mark.asyncio
async def test_closing_a_stream_early_frees_its_row_at_the_next_step(tiny_models, store):
    llm = ChatPanda(model=str(tiny_models.base), store=store, user_id="kim", max_tokens=400, device="cpu")
    runtime = llm._runtime(llm._options(None, {}))
    steps: list[int] = []
    hook = runtime.decoder.model.get_output_embeddings().register_forward_hook(lambda *args: steps.append(1))
    try:
        stream = llm.astream("Tell me a very long story")
        pieces = 0
        async for chunk in stream:
            pieces += bool(chunk.content)
            if pieces >= 2:
                break
        await stream.aclose()
        at_close = len(steps)
        for _ in range(3000):  # the scheduler drops the row at its next step boundary, then has nothing to run
            if runtime.scheduler.running_rows == 0:
                break
            await asyncio.sleep(0.01)
        assert runtime.scheduler.running_rows == 0
        assert len(steps) - at_close <= 2 and len(steps) < 100  # one step more at most, far from 400 tokens
        assert [m.role for m in store.messages("kim")] == ["user"]  # no answer recorded for a stream cut short
    finally:
        hook.remove()
