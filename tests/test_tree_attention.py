"""The tree path's per-step pieces (the candidate mask, keeping the chosen candidate) against their obvious versions.

The engine-level exactness (same tokens as the naive loop) is in test_decoding and test_model_families; these pin the
fast pieces themselves, on every branch they take (one row or several, first candidate or another, a window or not).
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.reference import reference_generate
from panda_chat.rewards.heads import BaseModelSignature, RewardHead, RewardHeadConfig
from panda_chat.tree_attention import SharedPrefix, keep_chosen_candidate

PROMPTS = ["The cat", "A physicist measures quantum tunnelling in detail.", "Our team builds a bicycle step by step."]
LAM = 3.0


def make_head(model) -> RewardHead:
    """A random linear head, scaled so that its rewards change which tokens win."""
    torch.manual_seed(0)
    config = RewardHeadConfig(
        name="formal", hidden_size=model.config.hidden_size, base_signature=BaseModelSignature.of(model)
    )
    head = RewardHead(config)
    with torch.no_grad():
        head.net.weight.mul_(10.0)
    return head.eval()


def obvious_tree_mask(attention_mask: torch.Tensor, k: int, window: int | None) -> torch.Tensor:
    """Candidate i of row b sees prefix slot j when it is a real token (inside the window) and candidate slot i."""
    batch, prefix_len = attention_mask.shape
    blocked = torch.finfo(torch.float32).min
    mask = torch.full((batch, 1, k, prefix_len + k), blocked)
    for b in range(batch):
        for i in range(k):
            for j in range(prefix_len):
                inside = window is None or j > prefix_len - window
                if attention_mask[b, j] and inside:
                    mask[b, 0, i, j] = 0.0
            mask[b, 0, i, prefix_len + i] = 0.0
    return mask


@pytest.mark.parametrize("window", [None, 3, 50])
def test_tree_mask_lets_each_candidate_see_its_real_prefix_and_only_itself(window):
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    prefix = SharedPrefix.from_prompt(attention_mask)
    mask = prefix.tree_mask(4, torch.float32, window)
    assert torch.equal(mask, obvious_tree_mask(attention_mask, 4, window))


def filled_cache(batch: int, prefix_len: int, k: int, layers: int = 3) -> DynamicCache:
    """A cache of random keys/values holding a prefix and k candidate slots per row (as after a tree forward)."""
    cache = DynamicCache()
    generator = torch.Generator().manual_seed(0)
    for layer in range(layers):
        keys, values = (torch.randn(batch, 2, prefix_len + k, 4, generator=generator) for _ in range(2))
        cache.update(keys, values, layer)
    return cache


@pytest.mark.parametrize(
    "chosen", [[0], [3], [4], [0, 2, 4], [1, 1, 0]], ids=["one-first", "one-middle", "one-last", "rows", "rows-b"]
)
def test_keeping_a_candidate_leaves_the_prefix_plus_that_candidate(chosen):
    prefix_len, k = 5, 5
    cache = filled_cache(len(chosen), prefix_len, k)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    keep_chosen_candidate(cache, prefix_len, torch.tensor(chosen))
    for layer, (keys, values) in zip(cache.layers, before, strict=True):
        for kept, full in ((layer.keys, keys), (layer.values, values)):
            expected = torch.stack(
                [
                    torch.cat([full[row, :, :prefix_len], full[row, :, prefix_len + c : prefix_len + c + 1]], dim=1)
                    for row, c in enumerate(chosen)
                ]
            )
            assert torch.equal(kept, expected)


def test_one_prompt_at_a_time_chooses_the_reference_loop_tokens(tiny_models):
    """One row (a chat turn) keeps its candidates the one-row way; its tokens are the naive loop's."""
    decoder = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    head = make_head(decoder.model)
    steered = False
    for prompt in PROMPTS:
        (output,) = decoder.generate(
            prompt, rewards={"formal": head}, weights={"formal": 1.0}, lam=LAM, max_new_tokens=24, stop_at_eos=False
        )
        ids = decoder.tokenizer(prompt)["input_ids"]
        expected = reference_generate(
            decoder.model,
            ids,
            {"formal": head},
            {"formal": 1.0},
            LAM,
            max_new_tokens=24,
            calibrations={"formal": head.config.calibration},
        )
        assert output.token_ids == expected
        plain = reference_generate(decoder.model, ids, {}, {}, 0.0, max_new_tokens=24)
        steered = steered or plain != expected
    assert steered  # the head changed some choice, so candidates other than the first were kept
