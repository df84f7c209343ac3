"""Fitting the demo's context-aware lambda on the demo base LM and heads, as ChatPanda will use it.

ChatPanda steers a user's answer with weights from their profile: per dimension, ``+c`` on the preferred pole and
``-c`` on the other, ``c`` being the profile's confidence (``personalize.steering_weights.pole_steering``), and it
hands the profile's context vector to the lambda function. So the fitting rows here are made the same way: each
training prompt is paired with a synthetic user (one pole per dimension, a confidence per dimension), and lambda is
fitted on the prompt features *and* that user's vector with ``panda_chat.evaluation.lambda_fitting.fit_lambda``.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import BaseModel, Field

from panda_chat.decoding import PandaDecoder
from panda_chat.demo.corpus import DIMENSIONS, DialogueCorpus
from panda_chat.evaluation.lambda_fitting import LambdaFitReport, fit_lambda
from panda_chat.evaluation.objective import SelectionObjective
from panda_chat.lam.learned import LearnedLambda
from panda_chat.lam.schedules import ExponentialDecayLambda
from panda_chat.personalize.steering_weights import pole_steering
from panda_chat.prompt_format import question_prompt
from profiles.catalog import PreferenceCatalog
from profiles.context import DimensionPreference, context_vector


class LambdaStageConfig(BaseModel):
    """Settings of the lambda fit.

    The grid stops at lambda 4: on the demo models larger lambdas degenerate (the Figure 5 failure), and with them in
    the grid the regression onto each prompt's best schedule overshot (a learned lambda near 3 at t = 0 that lost to
    lambda 1 on validation prompts). The strong ridge penalty was chosen the same way, on validation prompts of
    training topics (never the held-out evaluation topics): weaker penalties fitted the 48-64 prompts' noise.
    """

    prompts: int = Field(default=64, gt=1)
    max_new_tokens: int = Field(default=64, gt=0)
    # (start, decay) schedules: decay 1 is a constant lambda (ARGS)
    grid: list[tuple[float, float]] = [
        (0.25, 1.0),
        (0.5, 1.0),
        (1.0, 1.0),
        (1.5, 1.0),
        (2.0, 1.0),
        (2.0, 0.95),
        (3.0, 0.95),
        (4.0, 0.9),
    ]
    beta: float = Field(default=1.0, ge=0)
    top_k: int = Field(default=10, gt=0)
    kind: Literal["ridge", "mlp"] = "ridge"
    ridge_alpha: float = Field(default=1e4, gt=0)
    min_confidence: float = Field(default=0.4, ge=0, le=1)


class SyntheticUser(BaseModel):
    """One fitting row's user: the preferred pole and the confidence of each dimension."""

    poles: dict[str, str]
    confidence: dict[str, float]

    def steering(self) -> dict[str, float]:
        """Reward weights as ChatPanda's personalizer computes them for this profile."""
        weights: dict[str, float] = {}
        for dimension, pole in self.poles.items():
            weights.update(
                pole_steering({p: float(p == pole) for p in DIMENSIONS[dimension]}, self.confidence[dimension])
            )
        return weights

    def vector(self, catalog: PreferenceCatalog) -> list[float]:
        """The profile's ``PreferenceContext.vector`` for this user (what a learned lambda reads)."""
        dims = {
            d.name: DimensionPreference(
                weights={p: float(p == self.poles[d.name]) for p in d.pole_names},
                confidence=self.confidence[d.name],
                source="inferred",
            )
            for d in catalog.dimensions
        }
        return context_vector(catalog, dims)


def synthetic_users(n: int, seed: int, min_confidence: float) -> list[SyntheticUser]:
    rng = random.Random(f"{seed}/lambda-users")
    return [
        SyntheticUser(
            poles={d: rng.choice(p) for d, p in DIMENSIONS.items()},
            confidence={d: round(rng.uniform(min_confidence, 1.0), 3) for d in DIMENSIONS},
        )
        for _ in range(n)
    ]


def fit_demo_lambda(
    decoder: PandaDecoder, corpus: DialogueCorpus, config: LambdaStageConfig, progress: bool = True
) -> tuple[LearnedLambda, LambdaFitReport, list[SyntheticUser]]:
    """Fit lambda on training-topic prompts, each with a synthetic user's weights and preference vector."""
    catalog = PreferenceCatalog.default()
    questions = corpus.prompts(config.prompts, split="train")
    users = synthetic_users(config.prompts, corpus.seed, config.min_confidence)
    features = torch.tensor([u.vector(catalog) for u in users], dtype=torch.float32)
    model, report = fit_lambda(
        decoder,
        [question_prompt(decoder.tokenizer, q) for q in questions],
        [ExponentialDecayLambda(start, decay) for start, decay in config.grid],
        max_new_tokens=config.max_new_tokens,
        objective=SelectionObjective(beta=config.beta),
        weights=[u.steering() for u in users],
        preference_features=features,
        kind=config.kind,
        ridge_alpha=config.ridge_alpha,
        progress=progress,
        top_k=config.top_k,
    )
    return model, report, users
