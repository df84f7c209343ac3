"""Grouped-query attention without repeated keys/values (``panda_chat.grouped_attention``): the same numbers as
``transformers``' own SDPA attention, only inside panda-chat's forwards, never in anyone else's."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch
from transformers import AttentionInterface

from panda_chat import tree_attention
from panda_chat.decoding import PandaDecoder
from panda_chat.grouped_attention import grouped_sdpa
from tests.test_tree_attention import make_head

SDPA = AttentionInterface._global_mapping["sdpa"]


class _Attention(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups


def _inputs(batch: int, kv_heads: int, groups: int, queries: int, cached: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, kv_heads * groups, queries, 16, generator=generator)
    key = torch.randn(batch, kv_heads, cached, 16, generator=generator)
    value = torch.randn(batch, kv_heads, cached, 16, generator=generator)
    blocked = torch.rand(batch, 1, queries, cached, generator=generator) < 0.3
    blocked[..., 0] = False  # every query sees at least one slot
    mask = torch.zeros(batch, 1, queries, cached).masked_fill(blocked, torch.finfo(torch.float32).min)
    return query, key, value, mask


@pytest.mark.parametrize(("batch", "kv_heads", "groups", "queries", "cached"), [(1, 2, 2, 10, 30), (5, 1, 4, 3, 17)])
def test_grouped_path_gives_the_numbers_of_repeated_keys_and_values(batch, kv_heads, groups, queries, cached):
    query, key, value, mask = _inputs(batch, kv_heads, groups, queries, cached)
    module = _Attention(groups)
    plain, _ = SDPA.replaced(module, query, key, value, mask, scaling=0.25)
    with grouped_sdpa():
        grouped, _ = SDPA(module, query, key, value, mask, scaling=0.25)
    assert grouped.shape == plain.shape == (batch, queries, kv_heads * groups, 16)
    torch.testing.assert_close(grouped, plain, rtol=1e-6, atol=1e-6)


class _Spy:
    def __init__(self, replaced):
        self.replaced, self.calls = replaced, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.replaced(*args, **kwargs)


def test_forwards_outside_the_scope_and_in_other_threads_run_transformers_own_attention(monkeypatch):
    spy = _Spy(SDPA.replaced)
    monkeypatch.setattr(SDPA, "replaced", spy)
    query, key, value, mask = _inputs(2, 2, 2, 4, 9)
    module = _Attention(2)

    SDPA(module, query, key, value, mask)  # no scope: transformers' function
    assert spy.calls == 1
    with grouped_sdpa():
        SDPA(module, query, key, value, mask)  # in scope: the grouped path
        assert spy.calls == 1
        SDPA(module, query[:, :, :1], key, value, mask[:, :, :1])  # one query token: transformers packs it itself
        assert spy.calls == 2
        other = threading.Thread(target=SDPA, args=(module, query, key, value, mask))
        other.start()
        other.join()
        assert spy.calls == 3  # the scope belongs to the thread that entered it
    SDPA(module, query, key, value, mask)
    assert spy.calls == 4


def test_decoding_chooses_the_same_tokens_with_and_without_the_grouped_path(tiny_models, monkeypatch):
    decoder = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    config = decoder.model.config
    assert config.num_attention_heads > config.num_key_value_heads  # the tiny model uses grouped-query attention
    head = make_head(decoder.model)
    prompts = ["a short prompt", "a somewhat longer prompt that pads the other rows", "third"]

    def answers():
        outputs = decoder.generate(prompts, rewards={"formal": head}, lam=1.0, max_new_tokens=12, stop_at_eos=False)
        return [output.token_ids for output in outputs], [output.rewards for output in outputs]

    grouped = answers()
    monkeypatch.setattr(tree_attention, "grouped_sdpa", contextlib.nullcontext)
    repeated = answers()
    assert grouped[0] == repeated[0]
    torch.testing.assert_close(torch.tensor(grouped[1]), torch.tensor(repeated[1]), rtol=1e-5, atol=1e-5)
