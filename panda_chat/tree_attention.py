"""k candidate tokens on one shared, cached prefix: the tree mask, their positions, and keeping the chosen one.

PANDA scores k candidate next tokens per row at every step. Re-encoding prefix+candidate k times costs O(k * L)
tokens a step; copying the KV cache k times costs k x memory. Instead, the prefix is cached ONCE, and the k
candidates go through the model as one row of k tokens with a "tree" attention mask: candidate i sees the row's real
prefix tokens and itself, never the other candidates, and all k sit at the same position (the next one). The logits
and hidden states at candidate i are then exactly those of prefix+candidate_i. After the choice, only the chosen
candidate's keys/values are kept: they are written into the first candidate slot and the cache is cropped to it, so
the cache again holds the prefix plus one token, and never k copies of anything.

``PrefixCache`` puts this together for one backbone. The decoder (base model) and the cached reward model
(``panda_chat.rewards.reward_model``) each keep one, which is why it lives here, below both layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer


def prefill_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: real tokens count 0, 1, 2, ...; padding gets 0 (it is masked anyway).

    The same convention as ``transformers``' ``generate``, so a padded row is encoded exactly like the same prompt
    without padding.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


@dataclass
class SharedPrefix:
    """What a model's KV cache holds per row: which slots are real tokens, and the next position id of each row.

    The cache itself lives in the model's ``DynamicCache``; this object tracks the padding mask and positions that
    must accompany every forward on top of it.
    """

    attention_mask: torch.Tensor  # (B, P) long: 1 where the cached slot is a real token, 0 for left padding
    next_position: torch.Tensor  # (B,) long: position id of the token that comes next in each row

    @classmethod
    def from_prompt(cls, attention_mask: torch.Tensor) -> SharedPrefix:
        mask = attention_mask.long()
        return cls(attention_mask=mask, next_position=mask.sum(-1))

    @property
    def length(self) -> int:
        """Number of cached slots (padding included)."""
        return self.attention_mask.shape[1]

    def tree_inputs(self, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The 4D additive attention mask (B, 1, k, P + k) and position ids (B, k) for k candidates per row.

        Each candidate attends to its row's real prefix tokens and to itself; all k share the next position.
        """
        batch, prefix_len = self.attention_mask.shape
        blocked = torch.finfo(dtype).min
        device = self.attention_mask.device
        prefix = torch.zeros(batch, 1, 1, prefix_len, dtype=dtype, device=device)
        prefix.masked_fill_((self.attention_mask == 0)[:, None, None, :], blocked)
        own = torch.full((k, k), blocked, dtype=dtype, device=device)
        own.fill_diagonal_(0.0)
        mask = torch.cat([prefix.expand(batch, 1, k, prefix_len), own.expand(batch, 1, k, k)], dim=-1)
        positions = self.next_position[:, None].expand(batch, k)
        return mask, positions

    def append_one(self) -> None:
        """Record that every row's cache grew by one real token (the chosen candidate, or a plain decode step)."""
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        self.next_position = self.next_position + 1

    def decode_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """2D attention mask (B, P + 1) and position ids (B, 1) for a plain one-token step on top of the prefix."""
        ones = torch.ones_like(self.attention_mask[:, :1])
        return torch.cat([self.attention_mask, ones], dim=-1), self.next_position[:, None]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (e.g. drop finished rows from the batch)."""
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]


def check_tree_cache(cache: DynamicCache) -> None:
    """Refuse caches whose layers cannot be compacted in place (sliding windows, quantised or offloaded caches)."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise TypeError(
                f"tree decoding needs plain dynamic cache layers, this model uses {type(layer).__name__} "
                "(sliding-window and quantised caches are not supported)"
            )


def keep_chosen_candidate(cache: DynamicCache, prefix_length: int, chosen: torch.Tensor) -> None:
    """After a tree forward (cache = prefix + k candidates), keep only each row's ``chosen`` candidate.

    The chosen entry is copied into slot ``prefix_length`` (the first candidate slot) and the cache is cropped to
    ``prefix_length + 1``: one small gather per layer, no re-allocation of the prefix (the crop is a view).
    """
    batch = chosen.shape[0]
    slots = (prefix_length + chosen).view(batch, 1, 1, 1)
    for layer in cache.layers:
        for name in ("keys", "values"):
            states = getattr(layer, name)  # (B, kv_heads, P + k, head_dim)
            index = slots.expand(batch, states.shape[1], 1, states.shape[3])
            states[:, :, prefix_length : prefix_length + 1] = states.gather(2, index)
            setattr(layer, name, states[:, :, : prefix_length + 1])


def select_cache_rows(cache: DynamicCache, rows: torch.Tensor) -> None:
    """Keep only the batch ``rows`` of every cache layer."""
    for layer in cache.layers:
        layer.keys = layer.keys[rows]
        layer.values = layer.values[rows]


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes held by a cache's keys and values (views count at their visible size)."""
    total = 0
    for layer in cache.layers:
        for states in (layer.keys, layer.values):
            if states is not None:
                total += states.numel() * states.element_size()
    return total


class PrefixCache:
    """A decoder backbone's KV cache over a left-padded batch, with the forwards PANDA needs on top of it.

    The base model (``decoding.policy``) and a same-tokenizer reward model (``rewards.reward_model``) each keep one;
    they differ only in the head they put on the hidden states returned here (LM head vs. score head).
    """

    def __init__(self, model: PreTrainedModel):
        self.backbone = model.base_model  # e.g. LlamaModel: returns the final-normed last hidden state
        self.dtype = model.dtype
        self.cache = DynamicCache(config=model.config)
        self.prefix: SharedPrefix | None = None
        self._tree_checked = False

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode the left-padded prompts (B, L) into the cache; return their hidden states (B, L, H)."""
        self.prefix = SharedPrefix.from_prompt(attention_mask)
        return self._forward(input_ids, self.prefix.attention_mask, prefill_position_ids(self.prefix.attention_mask))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,); return its hidden state (B, H)."""
        attention_mask, positions = self.prefix.decode_inputs()
        hidden = self._forward(tokens[:, None], attention_mask, positions)
        self.prefix.append_one()
        return hidden[:, -1]

    def candidates(self, candidate_ids: torch.Tensor) -> torch.Tensor:
        """Run k candidates per row (B, k) on the cached prefix with the tree mask; return their hidden states
        (B, k, H). The cache holds prefix + k slots until ``keep``."""
        mask, positions = self.prefix.tree_inputs(candidate_ids.shape[1], self.dtype)
        hidden = self._forward(candidate_ids, mask, positions)
        if not self._tree_checked:  # checked on first use: plain decoding works with any cache type
            check_tree_cache(self.cache)
            self._tree_checked = True
        return hidden

    def keep(self, chosen: torch.Tensor) -> None:
        """After ``candidates``: keep each row's chosen candidate (B,) and drop the other k - 1."""
        keep_chosen_candidate(self.cache, self.prefix.length, chosen)
        self.prefix.append_one()

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch ``rows`` (finished rows are dropped)."""
        select_cache_rows(self.cache, rows)
        self.prefix.select_rows(rows)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        ).last_hidden_state
