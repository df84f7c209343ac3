"""Per-row steering of one generate call: which rewards are scored, their weights, calibration and lambda.

Rows of one batch may belong to different users, so weights and lambda are per row:

- ``weights``: ``None`` (every reward of the call with weight 1), one dict for all rows, or a list of dicts, one per
  row. A reward missing from a row's dict has weight 0 for that row (a user without that preference); a name that is
  not a reward of the call is an error (a typo would otherwise silently do nothing).
- ``lam``: a float (constant, ARGS), a ``LambdaFunction`` of (context, step), or a list with one of those per row.
  Every lambda must be >= 0.

Rewards with weight 0 on every row are not scored at all, and when no reward is left (or lambda is the constant 0
for every row) the call is plain decoding of the base model.

Calibrated rewards are clipped at +-``REWARD_CLIP`` standard deviations before they are weighted (``combine_rewards``):
a head that is extreme on one token (the demo's tone heads give +3.7 std to a first word that only one style uses)
would otherwise outvote every other preference of the user at that token. Clipped, a token that suits all of a
user's preferences beats one that suits a single preference to the extreme (the demo: 5 -> 6 of 6 answers moved
toward the user's poles). Evaluation measures rewards unclipped (``combine_rewards(..., clip=None)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from panda_chat.lam.base import ConstantLambda, LambdaContext, LambdaFunction
from panda_chat.rewards.base import RewardSource

WeightsSpec = Mapping[str, float] | Sequence[Mapping[str, float]] | None
LambdaSpec = float | LambdaFunction | Sequence[float | LambdaFunction]


def weight_matrix(weights: WeightsSpec, names: Sequence[str], batch_size: int) -> torch.Tensor:
    """(B, R) float weights of the call's R rewards for each row."""
    if weights is None:
        return torch.ones(batch_size, len(names))
    per_row = [weights] * batch_size if isinstance(weights, Mapping) else list(weights)
    if len(per_row) != batch_size:
        raise ValueError(f"got {len(per_row)} weight dicts for {batch_size} prompts: give one dict, or one per prompt")
    matrix = torch.zeros(batch_size, len(names))
    for row, row_weights in enumerate(per_row):
        for name, value in row_weights.items():
            if name not in names:
                known = ", ".join(names) or "none"
                raise ValueError(f"weight for unknown reward '{name}' (rewards of this call: {known})")
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"weight of reward '{name}' must be a finite number, got {value}")
            matrix[row, names.index(name)] = value
    return matrix


class RowLambdas:
    """lambda(context, step) per row, from a float, a LambdaFunction, or one of those per row."""

    def __init__(self, lam: LambdaSpec, batch_size: int):
        per_row = list(lam) if isinstance(lam, Sequence) and not isinstance(lam, str) else [lam] * batch_size
        if len(per_row) != batch_size:
            raise ValueError(f"got {len(per_row)} lambdas for {batch_size} prompts: give one, or one per prompt")
        self.functions: list[LambdaFunction] = []
        self.row_function: list[int] = []  # per row, an index into self.functions (distinct functions called once)
        constants: list[float | None] = []
        for value in per_row:
            if isinstance(value, ConstantLambda):
                value = value.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
                if not value >= 0:
                    raise ValueError(f"lambda must be >= 0, got {value}")
                constants.append(value)
                self.row_function.append(-1)
            elif callable(value):
                constants.append(None)
                if value not in self.functions:
                    self.functions.append(value)
                self.row_function.append(self.functions.index(value))
            else:
                raise TypeError(f"lambda must be a float or a LambdaFunction, got {type(value).__name__}")
        self._constants = torch.tensor([c if c is not None else 0.0 for c in constants])
        self.all_constant = not self.functions

    @property
    def always_zero(self) -> bool:
        return self.all_constant and bool((self._constants == 0).all())

    def __call__(self, context: LambdaContext, step: int) -> torch.Tensor:
        """(B,) float lambdas for this step, validated >= 0."""
        if self.all_constant:
            return self._constants
        values = self._constants.clone()
        for index, function in enumerate(self.functions):
            out = torch.as_tensor(function(context, step), dtype=torch.float32).detach().cpu().reshape(-1)
            rows = [row for row, f in enumerate(self.row_function) if f == index]
            picked = out[rows] if out.numel() > 1 else out.expand(len(rows))
            if not bool((picked >= 0).all()):
                raise ValueError(f"lambda function {function!r} returned a negative or NaN value at step {step}")
            values[rows] = picked
        return values


REWARD_CLIP = 2.0  # calibrated rewards count up to +-2 standard deviations when steering (module docstring)


def clip_reward(normalised: torch.Tensor, clip: float | None = REWARD_CLIP) -> torch.Tensor:
    """Calibrated (z-scored) rewards limited to [-clip, clip]; ``clip=None`` leaves them as they are."""
    return normalised if clip is None else normalised.clamp(-clip, clip)


def combine_rewards(
    raw: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    weights: torch.Tensor,
    clip: float | None = REWARD_CLIP,
) -> torch.Tensor:
    """(B, k, R) raw rewards, (R,) calibrations, (B, R) row weights -> (B, k) sum_j w_j * clip((r_j - mean_j) / std_j):
    the one place the engine, the batch scheduler and evaluation combine rewards."""
    return (clip_reward((raw - means) / stds, clip) * weights[:, None, :]).sum(-1)


@dataclass
class SteeringPlan:
    """The rewards a call scores (only those some row weighs), as tensors ready for the step loop."""

    sources: list[RewardSource]
    weights: torch.Tensor  # (B, R) per-row weights of ``sources``
    means: torch.Tensor  # (R,) calibration means
    stds: torch.Tensor  # (R,) calibration stds
    lambdas: RowLambdas

    @classmethod
    def build(
        cls, rewards: Mapping[str, RewardSource], weights: WeightsSpec, lam: LambdaSpec, batch_size: int
    ) -> SteeringPlan:
        names = list(rewards)
        matrix = weight_matrix(weights, names, batch_size)
        lambdas = RowLambdas(lam, batch_size)
        used = [] if lambdas.always_zero else [j for j in range(len(names)) if bool((matrix[:, j] != 0).any())]
        sources = [rewards[names[j]] for j in used]
        return cls(
            sources=sources,
            weights=matrix[:, used],
            means=torch.tensor([s.calibration.mean for s in sources]),
            stds=torch.tensor([s.calibration.std for s in sources]),
            lambdas=lambdas,
        )

    @property
    def steers(self) -> bool:
        return bool(self.sources)

    def to(self, device: torch.device) -> SteeringPlan:
        self.weights, self.means, self.stds = (t.to(device) for t in (self.weights, self.means, self.stds))
        return self

    def combine(self, raw: torch.Tensor, clip: float | None = REWARD_CLIP) -> torch.Tensor:
        """(B, k, R) raw rewards -> (B, k) combined reward sum_j w_j * clip((r_j - mean_j) / std_j)."""
        return combine_rewards(raw, self.means, self.stds, self.weights, clip)

    def select_rows(self, rows: torch.Tensor) -> None:
        self.weights = self.weights[rows.to(self.weights.device)]
