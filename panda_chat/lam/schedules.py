"""Lambda schedules: lambda as a function of the step t only, the same for every row.

A strong reward early and a weaker one later is a common shape: the first tokens set the answer's register (formal,
simple, detailed), after which a strong reward mostly costs fluency. ``ExponentialDecayLambda`` covers the constant
lambda of ARGS (``decay=1``) and the decaying ones, so a grid of (start, decay) pairs is the search space of lambda
fitting, and each prompt's best schedule is the target the learned lambda is fitted to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from panda_chat.lam.base import ConstantLambda, LambdaContext, LambdaFunction


@dataclass(frozen=True)
class ExponentialDecayLambda:
    """lambda(t) = floor + (start - floor) * decay**t; ``decay=1`` is a constant lambda."""

    start: float
    decay: float = 1.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if self.start < 0 or self.floor < 0:
            raise ValueError(f"lambda must be >= 0, got start={self.start}, floor={self.floor}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    def at(self, step: int) -> float:
        return self.floor + (self.start - self.floor) * self.decay**step

    def __call__(self, context: LambdaContext, step: int) -> torch.Tensor:
        return torch.full((len(context.prompts),), self.at(step))

    def label(self) -> str:
        return f"{self.start:g}" if self.decay == 1 and self.floor == 0 else f"exp:{self.start:g}:{self.decay:g}"


@dataclass(frozen=True)
class LinearDecayLambda:
    """lambda(t) falls linearly from ``start`` to ``end`` over ``steps`` steps, then stays at ``end``."""

    start: float
    end: float
    steps: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < 0 or self.steps <= 0:
            raise ValueError("LinearDecayLambda needs start, end >= 0 and steps > 0")

    def at(self, step: int) -> float:
        return self.start + (self.end - self.start) * min(step / self.steps, 1.0)

    def __call__(self, context: LambdaContext, step: int) -> torch.Tensor:
        return torch.full((len(context.prompts),), self.at(step))

    def label(self) -> str:
        return f"lin:{self.start:g}:{self.end:g}:{self.steps}"


def schedule_grid(starts: Sequence[float], decays: Sequence[float] = (1.0,)) -> list[ExponentialDecayLambda]:
    """Every (start, decay) pair as a schedule, constants (decay 1) included when 1 is among ``decays``."""
    grid = [ExponentialDecayLambda(start=s, decay=d) for s in starts for d in decays]
    # start 0 is the unguided decoder whatever the decay: keep one copy.
    unique = list(dict.fromkeys(ExponentialDecayLambda(0.0) if g.start == 0 else g for g in grid))
    return unique


def parse_lambda(spec: str) -> LambdaFunction:
    """A lambda from text: ``"2"`` (constant), ``"exp:START:DECAY"`` or ``"lin:START:END:STEPS"``."""
    parts = spec.strip().split(":")
    try:
        if len(parts) == 1:
            return ConstantLambda(float(parts[0]))
        if parts[0] == "exp" and len(parts) == 3:
            return ExponentialDecayLambda(start=float(parts[1]), decay=float(parts[2]))
        if parts[0] == "lin" and len(parts) == 4:
            return LinearDecayLambda(start=float(parts[1]), end=float(parts[2]), steps=int(parts[3]))
    except ValueError as exc:
        raise ValueError(f"bad lambda {spec!r}: {exc}") from exc
    raise ValueError(f"bad lambda {spec!r}: expected a number, 'exp:START:DECAY' or 'lin:START:END:STEPS'")
