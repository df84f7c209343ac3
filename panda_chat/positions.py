"""How many positions a model reads: the one reading of it, for the decoder's prompt check and for every place that
feeds a model text (reward training and bootstrap features), which must cut what a model with learned positions
cannot read at all (GPT-2, OPT: an index error past the last one)."""

from __future__ import annotations

from typing import Any

import torch

_LIMIT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")


def context_length(model: torch.nn.Module) -> int | None:
    """The number of positions the model reads, from its config; None when the config does not say."""
    config: Any = getattr(model, "config", None)  # a transformers config, or None for a plain module
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in _LIMIT_ATTRIBUTES:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def readable_length(model: torch.nn.Module, wanted: int) -> int:
    """``wanted`` tokens, or fewer when the model reads fewer positions."""
    limit = context_length(model)
    return wanted if limit is None else min(wanted, limit)
