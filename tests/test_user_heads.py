"""A user's own reward heads (trained on their feedback) join their steering plan, weighted by their feedback."""

from __future__ import annotations

import pytest
import torch

from panda_chat.chat_model import ChatPanda
from panda_chat.chat_model.runtime import model_runtime
from panda_chat.demo import demo_model_dir
from panda_chat.demo.corpus import DialogueCorpus
from panda_chat.demo.scoring import DemoRewardScorer
from panda_chat.personalize import user_head_rewards
from panda_chat.rewards.training import RewardTrainingConfig, train_user_reward_head
from profiles import ProfileStore

QUESTION = "How does a bicycle stay upright?"


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "p.db", embedder="hashing") as opened:
        yield opened


def test_feedback_trains_a_head_that_moves_the_next_answer_its_way(store):
    runtime = model_runtime(demo_model_dir(), device="cpu")
    llm = ChatPanda(store=store, user_id="fay", max_tokens=40, device="cpu", record=False)
    before = llm.invoke(QUESTION)
    assert "user_head" not in before.response_metadata["personalization"]["reward_kinds"]
    for pair in DialogueCorpus(3).preference_pairs("formal", 24):
        store.add_feedback("fay", prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected)
    train_user_reward_head(
        store, "fay", (runtime.decoder.model, runtime.tokenizer), config=RewardTrainingConfig(epochs=10)
    )
    after = llm.invoke(QUESTION)
    steering = after.response_metadata["personalization"]["steering"]
    mine = [s for s in steering if s["kind"] == "user_head"]
    assert len(mine) == 1 and mine[0]["reward"] == "user:fay:feedback"
    assert mine[0]["weight"] == pytest.approx(24 / (24 + 8))  # weighted by how much feedback trained it
    scorer = DemoRewardScorer(demo_model_dir(), {}, model=runtime.decoder.model, tokenizer=runtime.tokenizer)
    head = user_head_rewards("fay", store.reward_heads("fay"), runtime.decoder.model)[0][0].source.head
    scorer.heads = {"fay": head}
    assert after.content != before.content
    assert scorer.score(QUESTION, after.content)["fay"] > scorer.score(QUESTION, before.content)["fay"]


def test_a_head_for_another_model_is_skipped_with_a_note(store, tiny_models):
    runtime = model_runtime(demo_model_dir(), device="cpu")
    for pair in DialogueCorpus(1).preference_pairs("formal", 4):
        store.add_feedback("gus", prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected)
    train_user_reward_head(store, "gus", str(tiny_models.base), config=RewardTrainingConfig(epochs=1))
    rewards, notes = user_head_rewards("gus", store.reward_heads("gus"), runtime.decoder.model)
    assert rewards == [] and "another base model" in notes[0]


def _random_head(model, sign: float) -> bytes:
    """A linear head on ``model`` that pushes hard in a random direction (``sign`` flips it)."""
    from panda_chat.rewards.heads import BaseModelSignature, RewardHead, RewardHeadConfig

    hidden = model.config.hidden_size
    head = RewardHead(RewardHeadConfig(name="h", hidden_size=hidden, base_signature=BaseModelSignature.of(model)))
    with torch.no_grad():
        head.net.weight.copy_(sign * 40.0 * torch.randn(1, hidden, generator=torch.Generator().manual_seed(5)))
    return head.to_bytes()


def test_two_users_heads_never_share_a_name_even_when_their_ids_hold_colons(store, tiny_models):
    runtime = model_runtime(tiny_models.base, device="cpu")
    model = runtime.decoder.model
    # "a" + "b:c" and "a:b" + "c" once both became "user:a:b:c": in one batch, one user was steered by the other's head
    store.save_reward_head("a", "b:c", _random_head(model, +1.0), {"kind": "head", "train_pairs": 1000})
    store.save_reward_head("a:b", "c", _random_head(model, -1.0), {"kind": "head", "train_pairs": 1000})
    names = {user: user_head_rewards(user, store.reward_heads(user), model)[0][0].name for user in ("a", "a:b")}
    assert names["a"] != names["a:b"]
    llm = ChatPanda(model=str(tiny_models.base), store=store, max_tokens=6, device="cpu", record=False)
    alone = {user: llm.invoke("Hello", config={"configurable": {"user_id": user}}).content for user in ("a", "a:b")}
    assert alone["a"] != alone["a:b"]  # the two heads pull apart
    together = llm.batch(["Hello", "Hello"], config=[{"configurable": {"user_id": u}} for u in ("a", "a:b")])
    assert [message.content for message in together] == [alone["a"], alone["a:b"]]
