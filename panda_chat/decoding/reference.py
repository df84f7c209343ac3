"""The naive PANDA loop: no cache at all, every candidate re-encoded with its whole prefix.

At each step: re-encode the sequence through the base model for the next-token log-probs, take the top-k, then build
k full sequences prefix+candidate and run them through each reward (a reward model's score at the last token, or a
head on the features the trainers compute for the whole answer: ``heads.answer_features``).
O(k * L) tokens a step, quadratic in the length. It is obviously correct, which is its only job: the tests check the
cached engine against it, and the benchmark measures how much faster the engine is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import PreTrainedModel

from panda_chat.decoding.steering import clip_reward
from panda_chat.rewards.base import Calibration
from panda_chat.rewards.heads import RewardHead, answer_features, token_embeddings
from panda_chat.rewards.reward_model import reward_head_of
from panda_chat.tree_attention import backbone_of


@torch.inference_mode()
def reward_of_sequences(
    reward: RewardHead | PreTrainedModel, base_model: PreTrainedModel, sequences: torch.Tensor, answer_start: int
):
    """Raw reward of each full sequence (N, L) whose answer starts at position ``answer_start``, read at its last
    token."""
    if isinstance(reward, RewardHead):
        states = backbone_of(base_model)(input_ids=sequences).last_hidden_state
        reward = reward.to(device=states.device, dtype=states.dtype)
        embeddings = token_embeddings(base_model, sequences[:, answer_start:])
        rows = [
            answer_features(reward.config.features, row[answer_start:], row[answer_start - 1], tokens)[-1]
            for row, tokens in zip(states, embeddings)
        ]  # each sequence's answer read as a whole, the way the trainers read answers
        return reward(torch.stack(rows)).float()
    hidden = backbone_of(reward)(input_ids=sequences.to(reward.device)).last_hidden_state[:, -1]
    return reward_head_of(reward)(hidden).squeeze(-1).float().to(sequences.device)


@torch.inference_mode()
def reference_decode(
    base_model: PreTrainedModel,
    prompt_ids: Sequence[int],
    rewards: Mapping[str, RewardHead | PreTrainedModel],
    weights: Mapping[str, float],
    lam: float,
    top_k: int = 10,
    max_new_tokens: int = 64,
    calibrations: Mapping[str, Calibration] | None = None,
    eos_token_ids: Sequence[int] = (),
    temperature: float | None = None,
    seed: int | None = None,
) -> tuple[list[int], dict[str, list[float]]]:
    """PANDA for one prompt, the slow and obvious way: the generated token ids and each reward's raw value at every
    chosen token. Greedy, or (with ``temperature``) a draw from softmax(scores / temperature) over the k candidates
    with a generator seeded with ``seed``, exactly as the engine draws for a batch of one row."""
    calibrations = calibrations or {}
    device = base_model.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    sequence = torch.tensor([list(prompt_ids)], device=device)
    generated: list[int] = []
    chosen_raw: dict[str, list[float]] = {name: [] for name in rewards}
    for _ in range(max_new_tokens):
        logprobs = torch.log_softmax(base_model(input_ids=sequence, logits_to_keep=1).logits[0, -1].float(), dim=-1)
        candidate_logp, candidate_ids = logprobs.topk(top_k)
        extended = torch.cat([sequence.expand(top_k, -1), candidate_ids[:, None]], dim=-1)  # k x (prefix + z)
        combined = torch.zeros(top_k, device=device)
        raw = {}
        for name, reward in rewards.items():
            calibration = calibrations.get(name, Calibration())
            raw[name] = reward_of_sequences(reward, base_model, extended, len(prompt_ids))
            combined += weights.get(name, 0.0) * clip_reward(calibration.normalise(raw[name]))
        scores = candidate_logp + lam * combined
        if temperature is None:
            best = int(scores.argmax())
        else:
            probs = torch.softmax(scores[None] / temperature, dim=-1)
            best = int(torch.multinomial(probs, 1, generator=generator)[0, 0])
        token = int(candidate_ids[best])
        generated.append(token)
        for name in rewards:
            chosen_raw[name].append(float(raw[name][best]))
        sequence = extended[best : best + 1]
        if token in eos_token_ids:
            break
    return generated, chosen_raw


def reference_generate(
    base_model: PreTrainedModel,
    prompt_ids: Sequence[int],
    rewards: Mapping[str, RewardHead | PreTrainedModel],
    weights: Mapping[str, float],
    lam: float,
    top_k: int = 10,
    max_new_tokens: int = 64,
    calibrations: Mapping[str, Calibration] | None = None,
    eos_token_ids: Sequence[int] = (),
) -> list[int]:
    """Greedy PANDA for one prompt, the slow and obvious way; returns the generated token ids."""
    tokens, _ = reference_decode(
        base_model, prompt_ids, rewards, weights, lam, top_k, max_new_tokens, calibrations, eos_token_ids
    )
    return tokens
