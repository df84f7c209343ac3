"""lambda(x, t): how strongly the reward steers each row at step t.

PANDA's lambda is context-aware: a function of the prompt x, the user's preference context and the step t. The
decoder builds one ``LambdaContext`` per ``generate`` call and asks the lambda function for a (B,) tensor of
non-negative values at every step. A plain float is the constant lambda of ARGS; schedules and the learned model
implement the same ``LambdaFunction`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class LambdaContext:
    """Per-row facts about a generate call that a lambda function may condition on."""

    prompts: list[str]
    prompt_lengths: torch.Tensor  # (B,) number of real prompt tokens
    prompt_features: torch.Tensor  # (B, H) mean of the base model's final hidden states over the prompt tokens
    preference_features: torch.Tensor | None = None  # (B, P) the user's PreferenceContext.vector, when personalised


@runtime_checkable
class LambdaFunction(Protocol):
    """lambda(context, t) -> a float tensor of shape (B,), every value >= 0."""

    def __call__(self, context: LambdaContext, step: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class ConstantLambda:
    """The same lambda for every row and step (ARGS)."""

    value: float

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError(f"lambda must be >= 0, got {self.value}")

    def __call__(self, context: LambdaContext, step: int) -> torch.Tensor:
        return torch.full((len(context.prompts),), float(self.value))
