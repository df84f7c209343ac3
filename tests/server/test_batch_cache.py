"""Rows leaving a running batch: the answer a remaining row gets is the one it gets alone, whatever the cache kind."""

from __future__ import annotations

import pytest
import torch
from model_families import FAMILY_BY_NAME, WINDOW

from panda_chat.decoding.base_model import BaseModelSession
from panda_chat.serving import batch_cache

VOCAB = 64


def _prefill(model, path: str, rows: list[list[int]]) -> BaseModelSession:
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    policy = BaseModelSession(model, path=path)
    policy.prefill(ids, mask)
    return policy


@pytest.mark.parametrize(
    ("family", "path"), [("llama", "tree"), ("llama", "general"), ("mistral-v0.1-window", "general")]
)
@torch.inference_mode()
def test_a_row_left_alone_after_the_longest_row_leaves_decodes_as_it_would_alone(family, path):
    model = FAMILY_BY_NAME[family].build(VOCAB)
    generator = torch.Generator().manual_seed(0)
    long_row = torch.randint(3, VOCAB, (3 * WINDOW,), generator=generator).tolist()
    short_row = torch.randint(3, VOCAB, (3,), generator=generator).tolist()
    batch = _prefill(model, path, [long_row, short_row])
    batch.select_rows(torch.tensor([1]))  # the long row finished
    batch_cache.trim_left(batch)
    alone = _prefill(model, path, [short_row])
    for token in (5, 7, 9):  # a few steps after the trim
        tokens = torch.tensor([token])
        torch.testing.assert_close(batch.advance(tokens), alone.advance(tokens), atol=1e-4, rtol=1e-4)
