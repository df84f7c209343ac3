"""``PersonalizationPlan``: one user's ``PreferenceContext`` turned into what the decoder takes for one row.

This is where the two halves of panda-chat meet. The profile store says what a user prefers (pole weights, a
confidence per dimension, a context vector); the decoder wants plain numbers: reward sources, one weight per reward,
a lambda and the preference features a learned lambda reads. ``Personalizer.plan`` does that translation and keeps
a human-readable account of it (``summary`` for ``response_metadata``, ``explain`` for the chat CLI's ``/why``).
The decoder never sees the store, and the store never sees torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from panda_chat.lam.base import ConstantLambda, LambdaFunction
from panda_chat.personalize.sources import PoleRewards, RewardKind, UserHeadReward, reward_name
from panda_chat.personalize.steering_weights import MIN_STEERING, pole_steering
from panda_chat.rewards.base import RewardSource
from profiles.catalog import PreferenceCatalog, RewardSpec
from profiles.context import PreferenceContext

# lambda when nothing better is configured: calibrated rewards are z-scores, so 1.0 lets a one-sigma reward
# difference outweigh a one-nat log-probability difference between two candidate tokens.
DEFAULT_LAMBDA = 1.0

PlanMode = Literal["steered", "neutral", "unguided"]


class PoleSteering(BaseModel):
    """One steered pole: its reward, the weight it gets and which kind of reward scores it."""

    model_config = ConfigDict(frozen=True)

    dimension: str
    pole: str
    reward: str
    weight: float
    kind: RewardKind
    note: str | None = None


class PersonalizationPlan(BaseModel):
    """What one row of a generate call needs to be steered for one user (see the module docstring).

    ``mode`` is ``steered`` when some reward steers the answer, ``neutral`` when the profile holds no usable
    preference (a new user: plain decoding), ``unguided`` when it does but no reward could be built for this model.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    user_id: str
    mode: PlanMode
    weights: dict[str, float]
    rewards: dict[str, RewardSource] = Field(exclude=True, repr=False)
    lam: Any = Field(exclude=True, repr=False)  # float | LambdaFunction (a Protocol pydantic cannot check)
    lambda_kind: str
    preference_features: list[float]
    poles: list[PoleSteering]
    context: PreferenceContext

    def summary(self, lambdas: list[float] | None = None) -> dict[str, Any]:
        """The preference context used, as plain JSON-able data (for ``response_metadata``).

        ``lambdas`` are the per-token lambdas the decoder reports; their mean/min/max summarise a learned lambda.
        """
        lam: dict[str, Any] = {"kind": self.lambda_kind}
        if isinstance(self.lam, (int, float)):
            lam["value"] = float(self.lam)
        if lambdas:
            lam.update(mean=sum(lambdas) / len(lambdas), min=min(lambdas), max=max(lambdas))
        return {
            "user_id": self.user_id,
            "mode": self.mode,
            "dimensions": {
                name: {
                    "weights": dict(pref.weights),
                    "confidence": pref.confidence,
                    "source": pref.source,
                    "top_pole": pref.top_pole,
                }
                for name, pref in self.context.dimensions.items()
            },
            "steering": [pole.model_dump() for pole in self.poles],
            "reward_kinds": sorted({pole.kind for pole in self.poles}),
            "lambda": lam,
        }

    def explain(self) -> str:
        """A few lines a person can read: which preferences are in play, how strongly, and why."""
        lines = [
            f"user {self.user_id}: "
            + {
                "steered": "answers are steered by these preferences",
                "neutral": "no confident preference yet, answers are not steered",
                "unguided": "preferences known, but no reward could be built for this model: answers are not steered",
            }[self.mode]
        ]
        for name, pref in self.context.dimensions.items():
            weights = ", ".join(f"{pole} {weight:.2f}" for pole, weight in pref.weights.items())
            lines.append(f"  {name}: {weights} (confidence {pref.confidence:.2f}, {pref.source})")
        for pole in self.poles:
            note = f" [{pole.note}]" if pole.note else ""
            lines.append(f"  steer {pole.reward} by {pole.weight:+.2f} with a {pole.kind} reward{note}")
        if self.mode == "steered":
            lines.append(f"  lambda: {self.lambda_kind}")
        for item in self.context.evidence[:3]:
            lines.append(f'  because you said: "{item.text[:80]}" ({item.dimension} -> {item.pole})')
        return "\n".join(lines)


def with_model_rewards(catalog: PreferenceCatalog, rewards: Mapping[str, RewardSpec]) -> PreferenceCatalog:
    """The catalog with each zero-shot pole named in ``rewards`` given that reward instead.

    ``rewards`` is keyed by reward name (``dimension.pole``: two dimensions may both have a ``formal`` pole), or by
    bare pole name for a head whose dimension is not known. A model may ship rewards made for it (the demo model's
    heads, trained on its hidden states); they beat the generic zero-shot reward on that model. A reward the catalog
    configures explicitly (a head or reward model path) is kept: the catalog's author chose it.
    """
    if not rewards:
        return catalog
    dimensions = []
    for dimension in catalog.dimensions:
        poles = []
        for pole in dimension.poles:
            own = rewards.get(reward_name(dimension.name, pole.name)) or rewards.get(pole.name)
            poles.append(pole.model_copy(update={"reward": own}) if pole.reward.kind == "zero_shot" and own else pole)
        dimensions.append(dimension.model_copy(update={"poles": poles}))
    return PreferenceCatalog(dimensions=dimensions)


class Personalizer:
    """Plans rows for one base model and one catalog: reward sources come from a shared ``PoleRewards`` cache."""

    def __init__(
        self,
        catalog: PreferenceCatalog,
        pole_rewards: PoleRewards,
        lam: float | LambdaFunction = DEFAULT_LAMBDA,
        strength: float = 1.0,
    ):
        self.catalog = catalog
        self.pole_rewards = pole_rewards
        self.lam = lam.value if isinstance(lam, ConstantLambda) else lam
        self.strength = strength

    @property
    def lambda_kind(self) -> str:
        if isinstance(self.lam, (int, float)):
            return f"constant {float(self.lam):g}"
        label = getattr(self.lam, "label", None)  # e.g. LearnedLambda.label() -> "learned-ridge"
        return label() if callable(label) else type(self.lam).__name__

    def plan(self, context: PreferenceContext, user_heads: Sequence[UserHeadReward] = ()) -> PersonalizationPlan:
        """The row for ``context``; ``user_heads`` (the user's own heads for this model) join with their weights."""
        weights: dict[str, float] = {}
        rewards: dict[str, RewardSource] = {}
        poles: list[PoleSteering] = []
        wanted = False
        for dimension in self.catalog.dimensions:
            preference = context.dimensions.get(dimension.name)
            if preference is None:
                continue
            for pole_name, weight in pole_steering(preference.weights, preference.confidence, self.strength).items():
                wanted = True
                built = self.pole_rewards.get(self.catalog, dimension, dimension.pole(pole_name))
                if built.source is None:
                    continue
                weights[built.name] = weight
                rewards[built.name] = built.source
                poles.append(
                    PoleSteering(
                        dimension=dimension.name,
                        pole=pole_name,
                        reward=built.name,
                        weight=weight,
                        kind=built.kind,
                        note=built.note,
                    )
                )
        for head in user_heads:
            weight = head.weight * self.strength
            if abs(weight) < MIN_STEERING:
                continue
            weights[head.name] = weight
            rewards[head.name] = head.source
            poles.append(
                PoleSteering(
                    dimension="user",
                    pole=head.head_name,
                    reward=head.name,
                    weight=weight,
                    kind="user_head",
                    note=f"your own head, trained on {head.pairs} feedback pair(s)",
                )
            )
        mode: PlanMode = "steered" if weights else ("unguided" if wanted else "neutral")
        return PersonalizationPlan(
            user_id=context.user_id,
            mode=mode,
            weights=weights,
            rewards=rewards,
            lam=self.lam if weights else 0.0,
            lambda_kind=self.lambda_kind if weights else "none (not steered)",
            preference_features=list(context.vector),
            poles=poles,
            context=context,
        )
