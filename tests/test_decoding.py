"""The PANDA engine against the obvious implementations: the naive re-encoding loop and HF's own greedy decoding."""

from __future__ import annotations

import pytest
import torch

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.reference import reference_generate
from panda_chat.decoding.steering import clip_reward
from panda_chat.rewards.base import Calibration, CandidateBatch
from panda_chat.rewards.heads import BaseModelSignature, RewardHead, RewardHeadConfig
from panda_chat.rewards.reward_model import CachedRewardModel

PROMPTS = [
    "The cat",
    "A physicist measures quantum tunnelling in detail. It took 12 minutes",
    "Our team builds a bicycle step by step.",
]
LAM = 3.0
NEW_TOKENS = 64


def make_head(model, name="formal", seed=0, scale=10.0, calibration=None, features="last") -> RewardHead:
    """A random linear head, scaled so that its rewards are large enough to change which tokens win."""
    torch.manual_seed(seed)
    config = RewardHeadConfig(
        name=name,
        hidden_size=model.config.hidden_size,
        features=features,
        base_signature=BaseModelSignature.of(model),
        calibration=calibration or Calibration(mean=0.3, std=2.0),
    )
    head = RewardHead(config)
    with torch.no_grad():
        head.net.weight.mul_(scale)
    return head.eval()


@pytest.fixture(scope="module")
def decoder(tiny_models) -> PandaDecoder:
    dec = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    dec = PandaDecoder(dec.model, dec.tokenizer)  # a private reward table: other tests add their own rewards
    dec.add_reward("formal", make_head(dec.model))
    dec.add_reward("style", make_head(dec.model, "style", seed=3, features="last+mean"))  # reads the answer's mean too
    dec.add_reward("brief", make_head(dec.model, "brief", seed=5, features="prefix+token"))  # no candidate forward
    dec.add_reward("helpful", str(tiny_models.reward_model))
    dec.rewards["helpful"].calibration = Calibration(mean=-0.1, std=0.05)  # the raw RM rewards are tiny
    return dec


def reference_rewards(decoder: PandaDecoder, names) -> dict:
    everything = {
        "formal": decoder.rewards["formal"].head,
        "style": decoder.rewards["style"].head,
        "brief": decoder.rewards["brief"].head,
        "helpful": decoder.rewards["helpful"].model,
    }
    return {name: everything[name] for name in names}


def reference_calibrations(decoder: PandaDecoder) -> dict:
    return {name: source.calibration for name, source in decoder.rewards.items()}


@pytest.mark.parametrize(
    "weights",
    [
        {"formal": 1.0},
        {"style": 1.0},
        {"brief": 1.0},
        {"brief": 1.0, "style": -0.6},
        {"helpful": 1.0},
        {"formal": 0.7, "helpful": -0.5},
    ],
    ids=[
        "head",
        "head-on-answer-mean",
        "head-on-prefix-and-token",
        "prefix-and-candidate-heads",
        "reward-model",
        "both",
    ],
)
def test_cached_tree_paths_choose_the_reference_loop_tokens(decoder, weights):
    outputs = decoder.generate(PROMPTS, weights=weights, lam=LAM, max_new_tokens=NEW_TOKENS, stop_at_eos=False)
    unsteered = decoder.generate(PROMPTS, weights=weights, lam=0.0, max_new_tokens=NEW_TOKENS, stop_at_eos=False)
    for prompt, output, _plain in zip(PROMPTS, outputs, unsteered):
        expected = reference_generate(
            decoder.model,
            decoder.tokenizer(prompt)["input_ids"],
            reference_rewards(decoder, weights),
            weights,
            LAM,
            top_k=10,
            max_new_tokens=NEW_TOKENS,
            calibrations=reference_calibrations(decoder),
        )
        assert output.token_ids == expected
        assert len(output.token_ids) == NEW_TOKENS and output.finish_reason == "length"
    # The reward really steered: without it the model says something else.
    assert any(out.token_ids != plain.token_ids for out, plain in zip(outputs, unsteered))


def test_reported_rewards_are_the_calibrated_weighted_sum_of_the_chosen_tokens(decoder):
    weights = {"formal": 0.7, "helpful": -0.5}
    (output,) = decoder.generate(PROMPTS[1], weights=weights, lam=LAM, max_new_tokens=8, stop_at_eos=False)
    expected = sum(
        weight * clip_reward(decoder.rewards[name].calibration.normalise(torch.tensor(output.raw_rewards[name])))
        for name, weight in weights.items()
    )
    assert torch.allclose(torch.tensor(output.rewards), expected, atol=1e-5)
    assert output.lambdas == [LAM] * 8
    # And the raw reward of each chosen token is what the reference scorer gives for prefix + token.
    prompt_ids = decoder.tokenizer(PROMPTS[1])["input_ids"]
    sequence = torch.tensor([prompt_ids + output.token_ids])
    head = decoder.rewards["formal"].head
    with torch.inference_mode():
        hidden = decoder.model.base_model(input_ids=sequence).last_hidden_state[0, len(prompt_ids) :]
        assert torch.allclose(head(hidden), torch.tensor(output.raw_rewards["formal"]), atol=1e-4)


def test_prefix_and_token_heads_steer_without_a_forward_of_the_candidates(decoder, monkeypatch):
    """What makes them fast: the base model runs the chosen token only, as plain decoding does."""
    from panda_chat.decoding.base_model import BaseModelSession

    def no_candidate_forward(self, candidate_ids):
        raise AssertionError("the k candidates went through the base model")

    monkeypatch.setattr(BaseModelSession, "expand", no_candidate_forward)
    steered = decoder.generate(PROMPTS, weights={"brief": 1.0}, lam=LAM, max_new_tokens=16, stop_at_eos=False)
    plain = decoder.generate(PROMPTS, weights={"brief": 1.0}, lam=0.0, max_new_tokens=16, stop_at_eos=False)
    assert any(a.token_ids != b.token_ids for a, b in zip(steered, plain))
    with pytest.raises(AssertionError, match="the k candidates went through"):
        decoder.generate(PROMPTS[0], weights={"style": 1.0}, lam=LAM, max_new_tokens=2)


def _trim_after_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_lam_zero_is_the_base_models_own_greedy_decoding(decoder):
    batch = decoder.encode_prompts(PROMPTS)
    expected = decoder.model.generate(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False, max_new_tokens=NEW_TOKENS
    )[:, batch.input_ids.shape[1] :]
    eos = decoder.tokenizer.eos_token_id
    outputs = decoder.generate(PROMPTS, weights={"formal": 1.0}, lam=0.0, max_new_tokens=NEW_TOKENS)
    for output, row in zip(outputs, expected.tolist()):
        assert output.token_ids == _trim_after_eos(row, eos)

    # A lambda function that happens to return 0 cannot be skipped up front: the full tree path (k candidates
    # through the base model with a tree mask, logits from the chosen one's hidden state) must still match.
    def zero(context, step):
        return torch.zeros(len(context.prompts))

    through_tree = decoder.generate(PROMPTS, weights={"formal": 1.0}, lam=zero, max_new_tokens=NEW_TOKENS)
    assert [o.token_ids for o in through_tree] == [o.token_ids for o in outputs]


class RecordingRewardModel(CachedRewardModel):
    """A cached reward model that keeps its sessions, so a test can look at their caches afterwards."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sessions = []

    def start(self, prompts):
        session = super().start(prompts)
        self.sessions.append(session)
        return session


def test_reward_model_cache_holds_one_prefix_not_k(decoder):
    rm = RecordingRewardModel(decoder.rewards["helpful"].model, name="helpful")
    config = rm.model.config
    kv_heads, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    batch = decoder.encode_prompts(PROMPTS)
    prompt_slots, new_tokens = batch.input_ids.shape[1], 16
    peaks = {}
    for k in (2, 8):
        decoder.generate(
            PROMPTS, rewards={"rm": rm}, weights={"rm": 1.0}, top_k=k, max_new_tokens=new_tokens, stop_at_eos=False
        )
        session = rm.sessions[-1]
        # After the last step: B rows (never B * k), the prompt plus the tokens chosen so far.
        assert session.cache_shape == (len(PROMPTS), kv_heads, prompt_slots + new_tokens, head_dim)
        peaks[k] = session.peak_cache_bytes
    # The peak is the prefix once plus k candidate slots: growing k by 6 adds exactly 6 slots, not 6 prefixes.
    slot_bytes = 2 * config.num_hidden_layers * len(PROMPTS) * kv_heads * head_dim * 4
    assert peaks[2] == slot_bytes * (prompt_slots + new_tokens - 1 + 2)
    assert peaks[8] - peaks[2] == 6 * slot_bytes


def test_reward_model_session_scores_candidates_like_reencoding(decoder):
    rm = decoder.rewards["helpful"]
    batch = decoder.encode_prompts(PROMPTS)
    session = rm.start(batch)
    candidates = torch.tensor([[5, 77, 300], [9, 10, 11], [400, 3, 120]])
    scores = session.score(
        CandidateBatch(
            step=0, candidate_ids=candidates, generated_ids=[[], [], []], active=torch.ones(3, dtype=torch.bool)
        )
    )
    for row, prompt in enumerate(PROMPTS):
        ids = decoder.tokenizer(prompt)["input_ids"]
        for j, token in enumerate(candidates[row].tolist()):
            with torch.inference_mode():
                hidden = rm.model.base_model(input_ids=torch.tensor([[*ids, token]])).last_hidden_state[0, -1]
                expected = rm.model.score(hidden).item()
            assert scores[row, j].item() == pytest.approx(expected, abs=1e-5)


def test_heads_scored_as_one_stack_choose_the_reference_loop_tokens(decoder):
    from panda_chat.rewards.heads import HeadStack

    torch.manual_seed(5)
    warm = RewardHead(
        RewardHeadConfig(
            name="warm",
            kind="mlp",
            mlp_size=16,
            features="last+mean",  # in one stack with heads that read the last state only
            hidden_size=decoder.model.config.hidden_size,
            base_signature=BaseModelSignature.of(decoder.model),
        )
    ).eval()
    with torch.no_grad():
        warm.net[2].weight.mul_(20.0)
    heads = {"formal": decoder.rewards["formal"].head, "terse": make_head(decoder.model, "terse", seed=1), "warm": warm}
    stack = HeadStack()
    rewards = {name: stack.add(head, name) for name, head in heads.items()}
    weights = {"formal": 0.8, "terse": -0.6, "warm": 0.5}
    outputs = decoder.generate(
        PROMPTS, rewards=rewards, weights=weights, lam=LAM, max_new_tokens=NEW_TOKENS, stop_at_eos=False
    )
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        expected = reference_generate(
            decoder.model,
            decoder.tokenizer(prompt)["input_ids"],
            heads,
            weights,
            LAM,
            top_k=10,
            max_new_tokens=NEW_TOKENS,
            calibrations={name: head.config.calibration for name, head in heads.items()},
        )
        assert output.token_ids == expected


def test_one_extreme_reward_does_not_outvote_the_users_other_preferences():
    """Calibrated rewards count up to +-2 std when steering: a candidate that suits both of a user's preferences
    (1.5 std each) beats one that is extreme on one and slightly against the other (5 and -0.5). Unclipped, as
    evaluation measures, the extreme one would have the larger sum."""
    from panda_chat.decoding.steering import REWARD_CLIP, combine_rewards

    raw = torch.tensor([[[5.0, -0.5], [1.5, 1.5]]])  # (B=1, k=2, R=2), already on the calibrated scale
    means, stds, weights = torch.zeros(2), torch.ones(2), torch.ones(1, 2)
    steered = combine_rewards(raw, means, stds, weights)
    assert REWARD_CLIP == 2.0 and steered.argmax(-1).item() == 1
    assert torch.allclose(steered, torch.tensor([[1.5, 3.0]]))
    assert combine_rewards(raw, means, stds, weights, clip=None).argmax(-1).item() == 0
