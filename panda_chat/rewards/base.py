"""The one small interface every reward signal implements, so the decoder never special-cases a reward type.

A reward source is started once per ``generate`` call (``start``), which returns a session holding whatever per-call
state it needs (an external reward model keeps its KV cache there). At each decoding step the engine asks the session
to ``score`` the k candidate tokens of every row, then tells it which candidate each row chose (``commit``), so a
cached reward model can keep the chosen candidate's keys/values and drop the others.

Rewards are raw numbers on each source's own scale; ``Calibration`` (mean/std measured on a reference set and stored
with the reward) puts them on a common scale before they are combined with the user's weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Calibration(BaseModel):
    """Reward mean and standard deviation on a reference set; ``normalise`` maps raw rewards to z-scores."""

    mean: float = 0.0
    std: float = Field(default=1.0, gt=0.0)

    def normalise(self, rewards: torch.Tensor) -> torch.Tensor:
        return (rewards - self.mean) / self.std


@dataclass
class PromptBatch:
    """The prompts of one ``generate`` call, as the decoder tokenised them (left-padded)."""

    texts: list[str]
    input_ids: torch.Tensor  # (B, L) left-padded
    attention_mask: torch.Tensor  # (B, L) 1 for real tokens, 0 for padding
    tokenizer: PreTrainedTokenizerBase  # the base model's tokenizer


@dataclass
class CandidateBatch:
    """What a reward source sees at one step: k candidate next tokens per row."""

    step: int  # t, 0 for the first generated token
    candidate_ids: torch.Tensor  # (B, k) token ids
    generated_ids: list[list[int]]  # per row, the tokens chosen so far (the prompt excluded)
    active: torch.Tensor  # (B,) bool: rows still decoding (finished rows may be scored with anything)
    # (B, k, H) the base model's final (normed) hidden state at each candidate, when a source asked for it
    base_hidden: torch.Tensor | None = field(default=None)
    # (B, k, H) the mean of those hidden states over the answer so far, the candidate included (``"last+mean"`` heads)
    base_hidden_mean: torch.Tensor | None = field(default=None)
    # What ``"prefix+token"`` heads read, when a source asked for it (``needs_prefix_hidden``): (B, H) the final
    # hidden state of each row's last token (before the candidates), (B, H) the mean of those states over the answer
    # so far (zeros before its first token), and (B, k, H) the candidates' input embeddings.
    prefix_hidden: torch.Tensor | None = field(default=None)
    prefix_mean: torch.Tensor | None = field(default=None)
    candidate_embeddings: torch.Tensor | None = field(default=None)


class RewardSession(ABC):
    """Per-``generate`` state of one reward source."""

    @abstractmethod
    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        """Raw rewards r([x, y<t, z]) for every candidate z: a float tensor of shape (B, k)."""

    def commit(self, chosen: torch.Tensor) -> None:  # noqa: B027 - an optional hook, a no-op for stateless sources
        """Record the chosen candidate index per row, shape (B,). Stateless sources ignore it."""

    # True when the session implements ``select_rows``. The decoder drops finished rows from the batch only when
    # every session of the call can; otherwise finished rows simply stay in the batch until all rows finish.
    can_select_rows: bool = False

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (indices into the current batch, shape (B',)), so finished rows stop costing
        work. Sessions that implement it set ``can_select_rows = True`` (a stateless session with a no-op)."""
        raise TypeError(f"{type(self).__name__} cannot drop batch rows (its can_select_rows is False)")


def supports_row_selection(session: RewardSession) -> bool:
    """Whether ``session`` can drop batch rows."""
    return session.can_select_rows


class RewardSource(ABC):
    """A named reward signal with a stored calibration."""

    name: str
    calibration: Calibration
    # True when the source scores candidates from the base model's hidden states (shared-backbone heads): the engine
    # then runs the k candidates through the base model (tree mask) and fills ``CandidateBatch.base_hidden``.
    needs_base_hidden: bool = False
    # True when it scores candidates from the state before them (``"prefix+token"`` heads): the engine fills
    # ``CandidateBatch.prefix_hidden``, ``prefix_mean`` and ``candidate_embeddings``, and runs no candidate forward
    # unless another source needs the candidates' own states.
    needs_prefix_hidden: bool = False

    @abstractmethod
    def start(self, prompts: PromptBatch) -> RewardSession:
        """Begin one generate call (e.g. prefill a reward model's KV cache with the prompts)."""
