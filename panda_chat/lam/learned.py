"""The learned, context-aware lambda(x, t): a small model over prompt, preference and step features.

The seed paper's Figure 3: a lambda that depends on the context beats the best fixed one. Here lambda is predicted
from

    f(x, t) = [ prompt features (the decoder's mean final hidden state of the prompt, ``LambdaContext``),
                preference features (the user's ``PreferenceContext.vector``, when the model was fitted with them),
                step features (t / 100, log1p(t)) ]

standardised with the training mean/std, by one of two small models, both ending in a softplus so lambda >= 0, and
capped at the largest lambda it was fitted to (``max_lambda``: a prompt unlike the training ones must not push the
linear map past every schedule it saw, where decoding degenerates):

* ``ridge``: lambda = softplus(w . f + b), with (w, b) the closed-form ridge solution on softplus^-1(target).
  Deterministic and instant; it learns a prompt-dependent strength and a shared decay over t.
* ``mlp``: lambda = softplus(MLP(f)) with one hidden layer, trained on the squared error of lambda with AdamW. It
  also learns prompt-dependent decay (interactions of prompt and step features).

What it is fitted *to* is decided above it (``panda_chat.evaluation.lambda_fitting`` decodes a grid of schedules per
training prompt and keeps the best); this module only fits ``(features, best schedule) -> lambda(t)`` from arrays,
so it stays free of the decoder. A fitted model is one ``.safetensors`` file: tensors plus a JSON config in the
metadata, like a reward head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from panda_chat.lam.base import LambdaContext
from panda_chat.lam.schedules import ExponentialDecayLambda
from panda_chat.weights_file import read_module, save_module

LEARNED_LAMBDA_FORMAT_VERSION = 1
_METADATA_KEY = "panda_chat_learned_lambda"
STEP_FEATURE_NAMES = ("t/100", "log1p(t)")
_MIN_TARGET = 1e-3  # softplus^-1 of 0 is -inf: ridge targets are clamped to this lambda


def step_features(steps: torch.Tensor) -> torch.Tensor:
    """(..., 2) step features (t / 100, log1p(t)) of integer steps."""
    t = steps.float()
    return torch.stack([t / 100.0, torch.log1p(t)], dim=-1)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y (y > 0): log(expm1(y)), computed stably for large y."""
    return y + torch.log(-torch.expm1(-y))


class LearnedLambdaConfig(BaseModel):
    format_version: int = LEARNED_LAMBDA_FORMAT_VERSION
    kind: Literal["ridge", "mlp"] = "ridge"
    prompt_dim: int = Field(gt=0)
    preference_dim: int = Field(default=0, ge=0)
    hidden_size: int = Field(default=32, gt=0)  # mlp only
    base_model: str = ""  # the base model whose hidden states the prompt features are (informational)
    max_lambda: float | None = Field(default=None, gt=0)  # the largest fitted target; None (older files): no cap
    training: dict = Field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return self.prompt_dim + self.preference_dim + len(STEP_FEATURE_NAMES)


@dataclass
class LambdaTrainingSet:
    """Per training prompt: its features and the schedule that was best for it, over ``horizon`` steps."""

    prompt_features: torch.Tensor  # (N, H)
    best: Sequence[ExponentialDecayLambda]  # N schedules (anything with ``at(step) -> float``)
    horizon: int  # the steps 0..horizon-1 the targets are taken at (the decoded length)
    preference_features: torch.Tensor | None = None  # (N, P)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(prompt feats, steps, preference feats, targets) with one row per (prompt, step)."""
        n = self.prompt_features.shape[0]
        if len(self.best) != n:
            raise ValueError(f"{n} prompts but {len(self.best)} best schedules")
        steps = torch.arange(self.horizon).repeat(n)
        index = torch.arange(n).repeat_interleave(self.horizon)
        targets = torch.tensor([self.best[i].at(int(t)) for i, t in zip(index.tolist(), steps.tolist())])
        prefs = self.preference_features[index] if self.preference_features is not None else None
        return self.prompt_features[index].float(), steps, prefs, targets.float()


class LearnedLambda(nn.Module):
    """lambda(context, t) >= 0 from prompt, preference and step features (see the module docstring)."""

    feature_mean: torch.Tensor  # buffers, registered in __init__
    feature_std: torch.Tensor
    net: nn.Linear | nn.Sequential  # ridge: one linear layer; mlp: linear, GELU, linear

    def __init__(self, config: LearnedLambdaConfig):
        super().__init__()
        self.config = config
        d = config.feature_dim
        self.register_buffer("feature_mean", torch.zeros(d))
        self.register_buffer("feature_std", torch.ones(d))
        if config.kind == "ridge":
            self.net = nn.Linear(d, 1)
        else:
            self.net = nn.Sequential(nn.Linear(d, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, 1))

    # ----- prediction ---------------------------------------------------------------------------------------------
    def features(
        self, prompt_features: torch.Tensor, steps: torch.Tensor, preference_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, D) raw (unstandardised) feature rows; a model fitted with preferences fills missing ones with the
        training mean (an average user)."""
        prompt_features = prompt_features.float().cpu()
        if prompt_features.shape[-1] != self.config.prompt_dim:
            raise ValueError(
                f"the lambda model was fitted on prompt features of size {self.config.prompt_dim} "
                f"(base model {self.config.base_model or 'unknown'}), got {prompt_features.shape[-1]}: "
                "fit a lambda model for this base model with `panda-chat lambda fit`"
            )
        parts = [prompt_features]
        p = self.config.preference_dim
        if p:
            if preference_features is None:
                start = self.config.prompt_dim
                preference_features = self.feature_mean[start : start + p].expand(prompt_features.shape[0], p)
            preference_features = preference_features.float().cpu()
            if preference_features.shape[-1] != p:
                raise ValueError(
                    f"the lambda model expects {p} preference features, got {preference_features.shape[-1]}"
                )
            parts.append(preference_features)
        parts.append(step_features(steps.cpu()))
        return torch.cat(parts, dim=-1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) raw feature rows -> (N,) lambda in [0, max_lambda]."""
        lam = F.softplus(self.net((features - self.feature_mean) / self.feature_std).squeeze(-1))
        return lam if self.config.max_lambda is None else lam.clamp(max=self.config.max_lambda)

    def forward(self, context: LambdaContext, step: int) -> torch.Tensor:
        """The ``LambdaFunction`` protocol: (B,) lambda for every row at step ``step``."""
        return self.at_steps(context, torch.full((context.prompt_features.shape[0],), step))

    def at_steps(self, context: LambdaContext, steps: torch.Tensor) -> torch.Tensor:
        """(B,) lambda with each row at its own step (B,): a serving batch whose rows joined at different steps is
        one call, not one per row."""
        with torch.no_grad():
            lam = self.predict(self.features(context.prompt_features, steps, context.preference_features))
        return lam.to(context.prompt_features.device)

    def label(self) -> str:
        return f"learned-{self.config.kind}"

    # ----- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: LambdaTrainingSet,
        kind: Literal["ridge", "mlp"] = "ridge",
        ridge_alpha: float = 1.0,
        hidden_size: int = 32,
        epochs: int = 500,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        seed: int = 0,
        base_model: str = "",
    ) -> LearnedLambda:
        """Fit to the targets lambda_best(i)(t) of every (prompt i, step t) row of ``data``."""
        prompt_feats, steps, prefs, targets = data.rows()
        config = LearnedLambdaConfig(
            kind=kind,
            prompt_dim=prompt_feats.shape[1],
            preference_dim=0 if prefs is None else prefs.shape[1],
            hidden_size=hidden_size,
            base_model=base_model,
            max_lambda=max(float(targets.max()), _MIN_TARGET),
        )
        model = cls(config)
        x = model.features(prompt_feats, steps, prefs)
        std = x.std(0, unbiased=False)
        model.feature_mean.copy_(x.mean(0))
        model.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        z = (x - model.feature_mean) / model.feature_std
        if kind == "ridge":
            model._fit_ridge(z, targets, ridge_alpha)
        else:
            model._fit_mlp(z, targets, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=seed)
        with torch.no_grad():
            rmse = float(torch.sqrt(F.mse_loss(model.predict(x), targets)))
        model.config = config.model_copy(
            update={
                "training": {
                    "prompts": int(data.prompt_features.shape[0]),
                    "rows": int(x.shape[0]),
                    "horizon": data.horizon,
                    "train_rmse": rmse,
                    "ridge_alpha": ridge_alpha if kind == "ridge" else None,
                }
            }
        )
        return model.eval()

    def _fit_ridge(self, z: torch.Tensor, targets: torch.Tensor, alpha: float) -> None:
        """Closed-form ridge on y = softplus^-1(target): w = (Z^T Z + alpha I)^-1 Z^T (y - mean y), b = mean y."""
        y = inverse_softplus(targets.clamp_min(_MIN_TARGET)).double()
        zd = z.double()
        gram = zd.T @ zd + alpha * torch.eye(zd.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(gram, zd.T @ (y - y.mean()))
        if not isinstance(self.net, nn.Linear):
            raise TypeError("the ridge fit needs a lambda model of kind 'ridge'")
        with torch.no_grad():
            self.net.weight.copy_(w.float().unsqueeze(0))
            self.net.bias.fill_(float(y.mean()))

    def _fit_mlp(
        self, z: torch.Tensor, targets: torch.Tensor, epochs: int, lr: float, weight_decay: float, seed: int
    ) -> None:
        """Full-batch AdamW on the squared error of lambda (the rows are few: one per prompt and step)."""
        torch.manual_seed(seed)
        if not isinstance(self.net, nn.Sequential):
            raise TypeError("the MLP fit needs a lambda model of kind 'mlp'")
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            loss = F.mse_loss(F.softplus(self.net(z).squeeze(-1)), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    # ----- files --------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        return save_module(self, self.config, _METADATA_KEY, path)

    @classmethod
    def load(cls, path: str | Path) -> LearnedLambda:
        config, state = read_module(
            path, _METADATA_KEY, LearnedLambdaConfig, "lambda model", LEARNED_LAMBDA_FORMAT_VERSION
        )
        model = cls(config)
        model.load_state_dict(state)
        return model.eval()
