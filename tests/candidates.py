"""Test helpers for reward heads: a step's candidates carrying given hidden states, and random heads of given kinds."""

from __future__ import annotations

import torch

from panda_chat.rewards.base import CandidateBatch
from panda_chat.rewards.heads import BaseModelSignature, RewardHead, RewardHeadConfig


def candidates_with(batch: int, k: int, step: int = 0, **states: torch.Tensor) -> CandidateBatch:
    """``batch`` rows of ``k`` candidates (token 0, nothing generated yet, all rows active) with ``states``: any of
    ``base_hidden``, ``base_hidden_mean``, ``prefix_hidden``, ``prefix_mean``, ``candidate_embeddings``."""
    return CandidateBatch(
        step=step,
        candidate_ids=torch.zeros(batch, k, dtype=torch.long),
        generated_ids=[[] for _ in range(batch)],
        active=torch.ones(batch, dtype=torch.bool),
        **states,
    )


def random_heads(signature: BaseModelSignature, specs: list[tuple[str, int, str]]) -> list[RewardHead]:
    """One random head per (kind, mlp_size, features) of ``specs``, named h0, h1, ..."""
    return [
        RewardHead(
            RewardHeadConfig(
                name=f"h{i}",
                kind=kind,
                hidden_size=signature.hidden_size,
                mlp_size=size,
                features=features,
                base_signature=signature,
            )
        )
        for i, (kind, size, features) in enumerate(specs)
    ]
