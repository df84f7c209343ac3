"""Text rewards: the zero-shot description reward and the cross-tokenizer reward model, on hand-built candidates."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from panda_chat.rewards.base import CandidateBatch, PromptBatch
from panda_chat.rewards.text_reward_model import TextRewardModel, candidate_texts, score_candidate_texts
from panda_chat.rewards.zero_shot import ZeroShotReward


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return AutoTokenizer.from_pretrained(tiny_models.base)


def _batch(tokenizer, prefixes, candidate_words, active=None):
    generated = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    first_id = [[tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in row] for row in candidate_words]
    cands = torch.tensor(first_id)
    active = torch.ones(len(prefixes), dtype=torch.bool) if active is None else torch.tensor(active)
    return CandidateBatch(step=len(generated[0]), candidate_ids=cands, generated_ids=generated, active=active)


def _prompts(tokenizer, texts):
    return PromptBatch(
        texts=texts,
        input_ids=torch.zeros(len(texts), 1, dtype=torch.long),
        attention_mask=torch.ones(len(texts), 1, dtype=torch.long),
        tokenizer=tokenizer,
    )


def test_candidate_texts_are_prefix_plus_candidate(tokenizer):
    batch = _batch(tokenizer, ["The cat", "A robot"], [[" the", " a"], [" cooks", " builds"]])
    texts = candidate_texts(tokenizer, batch)
    assert texts == [
        [tokenizer.decode(batch.generated_ids[0] + [t]) for t in batch.candidate_ids[0].tolist()],
        [tokenizer.decode(batch.generated_ids[1] + [t]) for t in batch.candidate_ids[1].tolist()],
    ]
    assert texts[0][0].startswith("The cat")


def test_text_rewards_score_active_rows_only_in_one_call(tokenizer):
    batch = _batch(
        tokenizer,
        ["The cat", "A robot", "My neighbour"],
        [[" the", " a"], [" cooks", " builds"], [" enjoys", " repairs"]],
        active=[True, False, True],
    )
    calls = []

    def score(rows, texts):
        calls.append((rows, texts))
        return [float(len(text)) for text in texts]

    scores = score_candidate_texts(tokenizer, batch, score)
    texts = candidate_texts(tokenizer, batch)
    assert calls == [([0, 0, 2, 2], texts[0] + texts[2])]  # the finished row 1 is neither decoded nor scored
    assert scores.tolist() == [[float(len(t)) for t in texts[0]], [0.0, 0.0], [float(len(t)) for t in texts[2]]]


def test_zero_shot_prefers_candidates_closer_to_the_description(tokenizer):
    calls = []

    def embed(texts):  # counts words about food vs machines: a transparent embedder
        calls.append(len(texts))
        return np.array(
            [
                [sum(w in t for w in ("soup", "recipe", "cooks")), sum(w in t for w in ("engine", "builds")), 0.1]
                for t in texts
            ]
        )

    reward = ZeroShotReward("a recipe for soup", name="food", embedder=embed)
    batch = _batch(
        tokenizer, ["The chef", "The chef"], [[" cooks", " builds"], [" builds", " cooks"]], active=[True, True]
    )
    calls.clear()
    scores = reward.start(_prompts(tokenizer, ["p", "q"])).score(batch)
    assert calls == [4]  # all B*k candidate texts in one encode call
    assert scores.shape == (2, 2)
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    assert float(scores[0, 0]) == pytest.approx(float(reward.score_texts(["The chef cooks"])[0]))


def test_zero_shot_calibration_and_inactive_rows(tokenizer):
    reward = ZeroShotReward("formal and polite", name="formal", embedder="hashing")
    reward.calibrated_on(["Dear sir, kindly note.", "hey lol", "The results are formal and polite."])
    raw = reward.score_texts(["Dear sir, kindly note.", "hey lol", "The results are formal and polite."])
    assert reward.calibration.mean == pytest.approx(float(raw.mean()), abs=1e-6)
    batch = _batch(tokenizer, ["The cat", "The cat"], [[" the", " a"], [" the", " a"]], active=[True, False])
    scores = reward.start(_prompts(tokenizer, ["p", "q"])).score(batch)
    assert torch.equal(scores[1], torch.zeros(2))
    with pytest.raises(ValueError, match="non-empty description"):
        ZeroShotReward("  ", name="x", embedder="hashing")


def test_default_embedder_ranks_a_matching_text_higher():
    reward = ZeroShotReward("A friendly, warm and cheerful answer.", name="friendly")
    scores = reward.score_texts(
        ["Hi there! Happy to help, have a lovely day :)", "Pursuant to section 4, the request is denied."]
    )
    assert scores[0] > scores[1]


def test_cross_tokenizer_reward_model_matches_scoring_each_text_alone(tiny_models, tokenizer):
    rm_path = tiny_models.other_tokenizer_reward_model
    model = AutoModelForSequenceClassification.from_pretrained(rm_path).eval()
    rm_tok = AutoTokenizer.from_pretrained(rm_path)
    assert rm_tok.get_vocab() != tokenizer.get_vocab()
    source = TextRewardModel(model, rm_tok, name="rm", batch_size=3)
    prompts = ["Tell me about soup.", "Explain the budget"]
    batch = _batch(tokenizer, ["The soup is", "Our team"], [[" hot", " a", " the"], [" builds", " cooks", " the"]])
    scores = source.start(_prompts(tokenizer, prompts)).score(batch)
    texts = candidate_texts(tokenizer, batch)
    for b in range(2):
        for j in range(3):
            response_ids = rm_tok(texts[b][j], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([rm_tok(prompts[b])["input_ids"] + response_ids])
            with torch.no_grad():
                alone = model(input_ids=ids).logits[0, 0]
            assert float(scores[b, j]) == pytest.approx(float(alone), abs=1e-4)
