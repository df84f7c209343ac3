"""Padding token-id sequences of different lengths into one batch: the one pad-id rule and the one padding routine.

Two sides, for two jobs:

- **left** padding (decoding): every row's last prompt token sits in the last column, so the next token of every row
  is read from one position and generated tokens append in one column. Positions come from the attention mask.
- **right** padding (scoring and training forwards): every real token keeps the positions and attention it has when
  its sequence runs alone (a causal mask never lets it see the padding that follows), so hidden states, losses and
  rewards equal the unpadded ones. Sequence-classification models pool at the last non-pad token, which is why they
  are given the same pad id (``pad_token_id``) as their batches.

Padded positions are masked out (``attention_mask`` 0); their id never reaches a real token's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch


def pad_token_id(tokenizer: Any) -> int:
    """The id that fills padded positions: the tokenizer's pad token, else its EOS token (many causal LMs define
    no pad token), else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)``, both (N, longest) long tensors on the CPU, real tokens marked 1 in the mask.

    ``pad_id`` fills the padded positions of ``ids`` (use ``pad_token_id(tokenizer)``; for label rows, the loss's
    ignore index). Sequences are padded on ``side``.
    """
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not len(seq):
            continue
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pad_batch(sequences, pad_id, "left")``: a batch of prompts to decode."""
    return pad_batch(sequences, pad_id, "left")


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pad_batch(sequences, pad_id, "right")``: a batch to score or train on."""
    return pad_batch(sequences, pad_id, "right")
