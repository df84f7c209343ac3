"""Trained rewards inside the decoder: head features match the decoder's head path exactly, trained reward models
load with their calibration, and a reward model with another tokenizer is scored on decoded text."""

import pytest
import torch
from test_reward_training import formality_pairs
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.steering import clip_reward
from panda_chat.prompt_format import question_ids, question_prompt
from panda_chat.rewards.calibration import RewardModelInfo
from panda_chat.rewards.features import all_hidden_states, answer_rows, last_token_hidden_states
from panda_chat.rewards.heads import RewardHead
from panda_chat.rewards.loading import load_reward
from panda_chat.rewards.reward_model import CachedRewardModel
from panda_chat.rewards.text_reward_model import TextRewardModel
from panda_chat.rewards.training import RewardTrainingConfig, train_reward_head, train_reward_model


@pytest.fixture(scope="module")
def base(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base).eval()
    return model, AutoTokenizer.from_pretrained(tiny_models.base)


@pytest.fixture(scope="module")
def formal_head(base):
    return train_reward_head(base, formality_pairs(200), name="formal", config=RewardTrainingConfig(epochs=5)).head


def test_training_features_are_what_the_decoder_scores(base, formal_head):
    model, tokenizer = base
    decoder = PandaDecoder(model, tokenizer, rewards={"formal": formal_head})
    prompt = "Tell me how a student cooks the budget."
    text = question_prompt(tokenizer, prompt)
    batch = decoder.encode_prompts([text])
    assert batch.input_ids[0].tolist() == question_ids(tokenizer, prompt)

    out = decoder.generate([text], lam=2.0, max_new_tokens=6, stop_at_eos=False)[0]
    prefix = question_ids(tokenizer, prompt)
    # one plain forward of the whole answer: row t is the answer cut after token t (the state before token t, the
    # mean before it, token t's embedding), computed the way the trainers compute it
    ids = prefix + out.token_ids
    full = all_hidden_states(model, [ids], tokenizer.pad_token_id)[0]
    states = full[len(prefix) :]
    assert formal_head.config.features == "prefix+token"  # what trainers make by default
    with torch.no_grad():
        expected = formal_head(answer_rows("prefix+token", model, ids, full, len(prefix)))
    assert torch.allclose(torch.tensor(out.raw_rewards["formal"]), expected, atol=1e-4)
    # and what the featurizer gives for each cut answer, from text, is what training saw
    sequences = [prefix + out.token_ids[: t + 1] for t in range(len(out.token_ids))]
    last = last_token_hidden_states(model, sequences, tokenizer.pad_token_id)
    assert torch.allclose(last, states, atol=1e-5)
    # the calibration measured in training is what the decoder steers with: (raw - mean) / std
    calibration = formal_head.config.calibration
    assert calibration.std != 1.0 and calibration.mean != 0.0
    assert torch.allclose(
        torch.tensor(out.rewards),
        clip_reward(calibration.normalise(torch.tensor(out.raw_rewards["formal"]))),
        atol=1e-5,
    )


def test_head_bytes_round_trip(formal_head):
    again = RewardHead.from_bytes(formal_head.to_bytes())
    assert again.config == formal_head.config
    h = torch.randn(4, formal_head.config.input_size)
    assert torch.equal(again(h), formal_head(h))
    with pytest.raises(ValueError, match="not a panda-chat reward head"):
        RewardHead.from_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")


def test_trained_reward_model_loads_with_its_calibration(tiny_models, base, tmp_path):
    out = tmp_path / "rm"
    report = train_reward_model(
        tiny_models.base,
        formality_pairs(24),
        out,
        name="formal",
        config=RewardTrainingConfig(epochs=1, lr=1e-3, batch_size=8),
    )
    source = load_reward("formal", out, *base)
    assert isinstance(source, CachedRewardModel)
    assert source.calibration == report.calibration == RewardModelInfo.load(out).calibration


def test_other_tokenizer_reward_model_is_scored_on_decoded_text(tiny_models, base, tmp_path):
    model, tokenizer = base
    rm_dir = tiny_models.other_tokenizer_reward_model
    source = load_reward("other", rm_dir, model, tokenizer)
    assert isinstance(source, TextRewardModel) and source.calibration.std == 1.0

    decoder = PandaDecoder(model, tokenizer, rewards={"other": source})
    prompts = ["The cat explains", "Our team builds a bicycle"]
    outs = decoder.generate(prompts, lam=1.0, max_new_tokens=4, stop_at_eos=False)
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    reference = TextRewardModel(rm, AutoTokenizer.from_pretrained(rm_dir), name="ref")
    for prompt, out in zip(prompts, outs):
        texts = [tokenizer.decode(out.token_ids[: t + 1], skip_special_tokens=True) for t in range(4)]
        expected = reference.score_texts([prompt] * 4, texts)
        assert torch.allclose(torch.tensor(out.raw_rewards["other"]), expected, atol=1e-4)


def test_text_path_agrees_with_the_cached_path_where_tokens_agree(tiny_models, base):
    """The same reward model on both paths: wherever the decoded prefix re-tokenises to the generated ids, the text
    path reads the same tokens as the cached path and must give the same reward."""
    model, tokenizer = base
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_models.reward_model).eval()
    decoder = PandaDecoder(model, tokenizer, rewards={"rm": CachedRewardModel(rm, name="rm")})
    prompts = ["The cat explains the budget", "A student cooks"]
    text_rm = TextRewardModel(rm, tokenizer, name="rm-text")
    checked = 0
    for prompt, out in zip(prompts, decoder.generate(prompts, lam=1.0, max_new_tokens=6, stop_at_eos=False)):
        for t in range(len(out.token_ids)):
            text = tokenizer.decode(out.token_ids[: t + 1], skip_special_tokens=True)
            if tokenizer(text, add_special_tokens=False)["input_ids"] != out.token_ids[: t + 1]:
                continue
            checked += 1
            assert float(text_rm.score_texts([prompt], [text])[0]) == pytest.approx(out.raw_rewards["rm"][t], abs=1e-4)
    assert checked >= 4
