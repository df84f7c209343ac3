"""The one check of a prompt against the model's context length, before any forward pass.

A model reads at most its trained number of positions (``max_position_embeddings``). A longer prompt does not fail
on its own: learned position embeddings index out of range, rotary ones silently degrade, and a 100,000-token
prompt on a 1,024-position model ran for minutes and printed noise with exit 0. So ``PandaDecoder`` checks every
prompt plus the tokens it may generate against the limit first and refuses with a message saying how far over it
is; ``ChatPanda`` uses ``panda_chat.positions.context_length`` to drop the oldest history turns before it gets there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from panda_chat.positions import context_length


class PromptTooLongError(ValueError):
    """A prompt (with the tokens to generate) longer than the model's context."""


def check_prompt_lengths(
    lengths: Sequence[int], max_new_tokens: int, limit: int | None, budget_name: str = "max_new_tokens"
) -> None:
    """Refuse any prompt whose ``length + max_new_tokens`` exceeds ``limit`` (None: no known limit). The message
    calls the answer's budget ``budget_name``: the name the caller's own API gives it (``max_tokens`` in chat)."""
    if limit is None:
        return
    for index, length in enumerate(lengths):
        if length + max_new_tokens > limit:
            room = limit - max_new_tokens
            fix = (
                f"shorten it to at most {room} tokens or lower {budget_name}"
                if room > 0
                else f"lower {budget_name} below {limit}"
            )
            raise PromptTooLongError(
                f"prompt {index} has {length} tokens and {budget_name} is {max_new_tokens}, but the model reads "
                f"at most {limit} positions: {fix}"
            )


def check_context(model: torch.nn.Module, attention_mask: torch.Tensor, max_new_tokens: int) -> None:
    """``check_prompt_lengths`` for a left-padded batch (the engine's one-line call)."""
    check_prompt_lengths(attention_mask.sum(-1).tolist(), max_new_tokens, context_length(model))
