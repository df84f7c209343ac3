"""From a user's pole weights and confidence to reward weights: how much each pole's reward steers decoding.

A dimension with n poles gets, for each pole p with inferred weight w_p (the pole weights sum to 1) and the
dimension's confidence c,

    steer_p = c * (w_p - 1/n) * n / (n - 1) * strength

- a neutral user (uniform weights) or an unknown one (confidence 0) gets 0 on every pole: plain decoding;
- a certain user (c = 1, w_p = 1) gets +strength on p and -strength / (n - 1) on every other pole, so for two poles
  the answer is pushed toward p and away from its opposite by the same amount;
- in between, the steering grows linearly with both how lopsided the weights are and how sure the store is.

Steering weights smaller than ``MIN_STEERING`` in magnitude are dropped: their effect on token choice is nil, and a
reward nobody weighs is not scored at all (the decoder skips it), so a mildly opinionated profile stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping

MIN_STEERING = 0.05


def pole_steering(weights: Mapping[str, float], confidence: float, strength: float = 1.0) -> dict[str, float]:
    """Steering weight per pole of one dimension (see the module docstring); near-zero weights are dropped."""
    n = len(weights)
    if n < 2:
        raise ValueError("a preference dimension needs at least two poles")
    total = sum(weights.values())
    if total <= 0:
        return {}
    steering = {}
    for pole, weight in weights.items():
        value = confidence * (weight / total - 1.0 / n) * n / (n - 1) * strength
        if abs(value) >= MIN_STEERING:
            steering[pole] = value
    return steering
