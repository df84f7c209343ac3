"""Rows joining and leaving a running batch's KV cache (the base model's ``BaseModelSession``) between decoding steps.

The engine decodes a fixed batch; continuous batching needs two more operations on the same left-padded cache:

- ``merge``: a freshly prefilled group of rows joins the running rows. Both caches are left-padded to the longer one
  (padding slots are masked out, and every row keeps its own position ids), then stacked along the batch dimension.
- ``trim_left``: when the longest rows have left, the leading slots that are padding in every remaining row are cut,
  so a batch never keeps paying attention over a departed row's length.

Both only touch the public state of ``PrefixCache``: the ``DynamicCache`` layers' keys/values and ``SharedPrefix``.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from panda_chat.decoding.base_model import BaseModelSession


def can_merge(policy: BaseModelSession) -> bool:
    """Whether this policy's cache layers are plain dynamic layers (sliding-window or quantised ones are not)."""
    return all(type(layer) is DynamicLayer for layer in policy.kv.cache.layers)


def _plain_layers(policy: BaseModelSession) -> list[DynamicLayer]:
    """The cache's layers, when all are plain dynamic layers (whose keys/values merge and trim_left may edit)."""
    layers = [layer for layer in policy.kv.cache.layers if type(layer) is DynamicLayer]
    if len(layers) != len(policy.kv.cache.layers):
        raise ValueError("only a cache of plain dynamic layers can be merged or trimmed")
    return layers


def _filled(states: torch.Tensor | None) -> torch.Tensor:
    if states is None:
        raise ValueError("a cache layer is empty: prefill the rows before merging or trimming them")
    return states


def _left_pad(states: torch.Tensor, length: int) -> torch.Tensor:
    """Pad the slot dimension (-2) of (B, heads, P, d) states on the left with zeros up to ``length``."""
    missing = length - states.shape[-2]
    if missing == 0:
        return states
    pad = states.new_zeros((*states.shape[:-2], missing, states.shape[-1]))
    return torch.cat([pad, states], dim=-2)


def merge(running: BaseModelSession, joining: BaseModelSession) -> None:
    """Append ``joining``'s rows after ``running``'s (in place on ``running``); ``joining`` must not be used after."""
    a, b = running.kv.filled_prefix, joining.kv.filled_prefix
    length = max(a.length, b.length)
    for mine, theirs in zip(_plain_layers(running), _plain_layers(joining), strict=True):
        mine.keys = torch.cat([_left_pad(_filled(mine.keys), length), _left_pad(_filled(theirs.keys), length)], dim=0)
        mine.values = torch.cat(
            [_left_pad(_filled(mine.values), length), _left_pad(_filled(theirs.values), length)], dim=0
        )
    masks = [a.attention_mask, b.attention_mask]
    masks = [torch.cat([m.new_zeros((m.shape[0], length - m.shape[1])), m], dim=1) for m in masks]
    a.attention_mask = torch.cat(masks, dim=0)
    a.next_position = torch.cat([a.next_position, b.next_position], dim=0)
    sum_a, sum_b, length_a, length_b = (
        running.answer_sum,
        joining.answer_sum,
        running.answer_length,
        joining.answer_length,
    )
    last_a, last_b = running.last_hidden, joining.last_hidden
    if sum_a is None or sum_b is None or length_a is None or length_b is None or last_a is None or last_b is None:
        raise ValueError("prefill the rows before merging them")
    running.answer_sum = torch.cat([sum_a, sum_b], dim=0)  # every row keeps its own answer's running sum
    running.answer_length = torch.cat([length_a, length_b], dim=0)
    running.last_hidden = torch.cat([last_a, last_b], dim=0)  # and its own last token's state
    running._candidate_hidden = None


def trim_left(policy: BaseModelSession) -> None:
    """Drop the leading cache slots that are padding in every row (of plain layers only: a sliding-window layer
    keeps fewer slots than the mask has, so cutting the mask's padding would cut its real entries)."""
    if not can_merge(policy):
        return
    mask = policy.kv.filled_prefix.attention_mask
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else mask.shape[1]
    if start == 0:
        return
    for layer in _plain_layers(policy):
        layer.keys = _filled(layer.keys)[:, :, start:]
        layer.values = _filled(layer.values)[:, :, start:]
    policy.kv.filled_prefix.attention_mask = mask[:, start:]
