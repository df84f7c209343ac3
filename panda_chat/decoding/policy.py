"""The base model pi_b during one generate call: its KV cache, and the three kinds of forward the engine needs.

- ``prefill``: the left-padded prompts once; returns the first step's logits and the prompt features lambda uses.
- ``advance``: one chosen token per row (plain decoding, and the external-reward-model path).
- ``expand`` + ``keep``: the k candidates of every row in ONE forward with a tree mask (shared-backbone heads need
  the base model's hidden state at each candidate); after the choice ``keep`` drops the other candidates from the
  cache and returns the next step's logits from the chosen candidate's hidden state, so the chosen token never
  needs a forward of its own.

The backbone and the LM head are called separately, so logits are computed only where they are needed (the last
prompt token, the chosen candidate), never for all k candidates or all prompt positions.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from panda_chat.tree_attention import PrefixCache


class BasePolicy:
    def __init__(self, model: PreTrainedModel):
        self.kv = PrefixCache(model)
        self.lm_head = model.get_output_embeddings()
        self._candidate_hidden: torch.Tensor | None = None

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the prompts; return next-token logits (B, V) and the mean prompt hidden state (B, H)."""
        hidden = self.kv.prefill(input_ids, attention_mask)
        real = self.kv.prefix.attention_mask[..., None].to(hidden.dtype)
        prompt_features = (hidden * real).sum(1) / real.sum(1).clamp(min=1)
        return self.lm_head(hidden[:, -1]), prompt_features.float()

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,); return the next logits (B, V)."""
        return self.lm_head(self.kv.step(tokens))

    def expand(self, candidate_ids: torch.Tensor) -> torch.Tensor:
        """Run the k candidates of every row (B, k) on the cached prefix; return their hidden states (B, k, H)."""
        self._candidate_hidden = self.kv.candidates(candidate_ids)
        return self._candidate_hidden

    def keep(self, chosen: torch.Tensor) -> torch.Tensor:
        """Keep each row's chosen candidate (B,) after ``expand``; return the next logits (B, V)."""
        self.kv.keep(chosen)
        rows = torch.arange(chosen.shape[0], device=chosen.device)
        return self.lm_head(self._candidate_hidden[rows, chosen])

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the batch (finished rows are dropped)."""
        self.kv.select_rows(rows)
        if self._candidate_hidden is not None:
            self._candidate_hidden = self._candidate_hidden[rows]
