"""An external reward model that shares the base model's tokenizer, scored with one cached prefix and a tree mask.

The reward model (any ``...ForSequenceClassification`` with one output whose backbone is a decoder with a dynamic KV
cache, e.g. ``LlamaForSequenceClassification``) reads exactly the token ids the base model reads. So (on the tree path;
the general path of ``panda_chat.tree_attention`` repeats the cache k times for one step instead, for models whose
attention a tree mask cannot express):

- ``start`` prefills the prompt once; the cache holds ONE copy of each row's prefix;
- ``score`` runs the k candidates of every row as one row of k tokens with a tree attention mask, and applies the
  classification head at each candidate: the reward of prefix+candidate for all k in one forward;
- ``commit`` keeps the chosen candidate's keys/values and drops the other k-1.

The classification head of a sequence classifier reads the last token's hidden state; here that is the candidate.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from panda_chat.rewards.base import Calibration, CandidateBatch, PromptBatch, RewardSession, RewardSource
from panda_chat.tree_attention import Path, PrefixCache, cache_bytes, choose_path, final_hidden


def reward_head_of(model: PreTrainedModel) -> nn.Module:
    """The linear layer a sequence classifier applies to its backbone's last hidden state (``score`` in HF)."""
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"{type(model).__name__} is not a supported reward model: expected a ...ForSequenceClassification "
            "with a `score` head on a decoder backbone (e.g. LlamaForSequenceClassification)"
        )
    if model.config.num_labels != 1:
        raise ValueError(
            f"a reward model must output one scalar (num_labels=1); this one has num_labels={model.config.num_labels}"
        )
    return head


class CachedRewardModel(RewardSource):
    """A same-tokenizer reward model scored with a single cached prefix per row (see the module docstring)."""

    needs_base_hidden = False

    def __init__(
        self, model: PreTrainedModel, name: str, calibration: Calibration | None = None, path: str | None = "auto"
    ):
        self.model = model.eval()
        self.head = reward_head_of(model)
        self.name = name
        self.calibration = calibration or Calibration()
        # "auto": tree when a short check reproduces the model's own forward, else general; see tree_attention.
        self.path: Path = choose_path(self.model, path)

    def start(self, prompts: PromptBatch) -> CachedRewardSession:
        return CachedRewardSession(self, prompts)


class CachedRewardSession(RewardSession):
    """The reward model's KV cache for one generate call: the prompts plus the tokens chosen so far."""

    can_select_rows = True

    def __init__(self, source: CachedRewardModel, prompts: PromptBatch):
        self.source = source
        self.device = source.model.device
        self.kv = PrefixCache(source.model, source.path)
        with torch.inference_mode():
            self.kv.prefill(prompts.input_ids.to(self.device), prompts.attention_mask.to(self.device))
        self.peak_cache_bytes = cache_bytes(self.kv.cache)

    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        with torch.inference_mode():
            candidate_ids = candidates.candidate_ids.to(self.device)
            hidden = final_hidden(self.kv.forward_candidates(candidate_ids)).reshape(*candidate_ids.shape, -1)
            rewards = self.source.head(hidden).squeeze(-1).float()
        self.peak_cache_bytes = max(self.peak_cache_bytes, cache_bytes(self.kv.cache))
        return rewards.to(candidates.candidate_ids.device)

    def commit(self, chosen: torch.Tensor) -> None:
        self.kv.keep(chosen.to(self.device))

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the batch (the decoder drops finished rows)."""
        self.kv.select_rows(rows.to(self.device))

    @property
    def cache_shape(self) -> tuple[int, ...]:
        """(batch, kv_heads, cached slots, head_dim) of the first layer: the batch is B, never B * k."""
        keys = getattr(self.kv.cache.layers[0], "keys", None)
        if not isinstance(keys, torch.Tensor):
            raise RuntimeError("the reward model's cache holds nothing yet")
        return tuple(keys.shape)
