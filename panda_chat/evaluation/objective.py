"""The selection objective shared by the lambda candidate set, lambda fitting and the ARGS baseline's lambda choice.

For a response y of prompt x, with y0 the unguided (lambda = 0) response of the same prompt:

    F(y) = [NLL(y) - NLL(y0)] + gamma * [D(y) - D(y0)]          fluency loss
    J(y) = [R(y) - R(y0)] - beta * F(y)                          what is maximised

* R: the combined, calibrated reward of the whole response (``ScoredResponse.reward``);
* NLL: the base model's mean negative log-likelihood per response token: how unlikely pi_b finds the text;
* D: degeneration, ``1 - diversity`` of the response alone (repeated 2/3/4-grams; 0 for no repetition).

Subtracting y0's terms does not change which response of a prompt wins; it makes J comparable across prompts (0 for
the unguided answer), so the mean J of a lambda over many prompts is meaningful. Choosing among whole responses by J
is the sound reading of the paper's candidate set: taking argmax over lambda per token always favours the largest
lambda whenever the reward is positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoredResponse:
    """What the objective needs to know about one finished response."""

    reward: float  # R(x, y)
    nll: float  # mean base-model NLL per token
    degeneration: float  # 1 - diversity of this response alone, in [0, 1]
    token_rewards: list[float] = field(default_factory=list)  # combined reward of each token's prefix


@dataclass(frozen=True)
class SelectionObjective:
    """J = reward gain - beta * fluency loss (see the module docstring)."""

    beta: float = 1.0
    gamma: float = 1.0

    def fluency_loss(self, response: ScoredResponse, unguided: ScoredResponse) -> float:
        return (response.nll - unguided.nll) + self.gamma * (response.degeneration - unguided.degeneration)

    def value(self, response: ScoredResponse, unguided: ScoredResponse) -> float:
        return (response.reward - unguided.reward) - self.beta * self.fluency_loss(response, unguided)


def select_best(values: Sequence[float]) -> int:
    """Index of the largest J (the first one on ties, so the earlier, usually milder, lambda wins)."""
    if not values:
        raise ValueError("no candidates to choose from")
    return max(range(len(values)), key=lambda i: (values[i], -i))
