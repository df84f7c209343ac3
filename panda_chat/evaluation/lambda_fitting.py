"""Fitting the learned lambda: find each training prompt's best schedule by decoding, then fit ``LearnedLambda``.

For every training prompt x, decode (as rows of shared batches) the unguided response and one response per schedule
of a grid lambda(t) = start * decay**t (constants are decay = 1), and measure J = [R - R0] - beta * fluency loss
(``objective``). The schedule with the largest J is x's target; ``LearnedLambda.fit`` then learns to predict
lambda_best(x)(t) from the prompt features the decoder gives lambda functions (``LambdaContext.prompt_features``, the
mean final hidden state over the prompt, computed here with the decoder's own ``BaseModelSession.prefill``), the user's
preference features when given, and the step.

Which schedule is "x's target" is the weak point: one prompt's argmax over a grid is noisy (the per-prompt oracle is
far above any fixed schedule, mostly by luck of greedy decoding), and a regression onto noisy argmaxes lands between
them, not on the schedule that is best on average. ``target="value"`` therefore first predicts each schedule's J from
the features (ridge regression of the (prompts x schedules) J matrix, its penalty chosen by K-fold cross-validation
on the training prompts: the held-out fold's actual J of the schedule each fit picks; an infinite penalty is the best
fixed schedule) and takes, per prompt, the schedule with the largest *predicted* J as its target. ``target="best"``
is the plain per-prompt argmax.

The report says what fitting found: the mean J of each schedule, the best single schedule (what a fixed lambda, ARGS,
can do at best on these prompts), the per-prompt oracle (what a perfect context-aware lambda could do), and the mean
J the fitted model actually gets when it decodes the same prompts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.base_model import BaseModelSession
from panda_chat.evaluation.candidate_set import decode_lambda_grid, lambda_label
from panda_chat.evaluation.objective import SelectionObjective
from panda_chat.evaluation.scoring import ResponseScorer, Weights
from panda_chat.lam.learned import LambdaTrainingSet, LearnedLambda
from panda_chat.lam.schedules import ExponentialDecayLambda


class LambdaFitReport(BaseModel):
    prompts: int
    max_new_tokens: int
    beta: float
    gamma: float
    grid: list[str]
    mean_value: dict[str, float]  # mean J over the prompts, per schedule
    best_counts: dict[str, int]  # how many prompts each schedule was best for
    best_fixed: str  # the single schedule with the largest mean J (a fixed lambda at its best)
    best_fixed_value: float
    oracle_value: float  # mean over prompts of each prompt's best J
    learned_value: float | None = None  # mean J of the fitted model decoding the same prompts
    target: str = "best"  # "best": each prompt's argmax; "value": argmax of the cross-validated J prediction
    value_alpha: float | None = None  # the J regression's penalty chosen by cross-validation (inf: best fixed)
    cv_value: dict[str, float] = {}  # per candidate penalty: mean held-out-fold J of the schedules it picks
    kind: str
    train_rmse: float
    seconds: float
    out: str | None = None


@torch.inference_mode()
def prompt_features(decoder: PandaDecoder, prompts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """(N, H) the decoder's ``LambdaContext.prompt_features`` of each prompt (its mean final hidden state)."""
    parts = []
    for start in range(0, len(prompts), batch_size):
        batch = decoder.encode_prompts(list(prompts[start : start + batch_size]))
        _, features = BaseModelSession(decoder.model).prefill(batch.input_ids, batch.attention_mask)
        parts.append(features.float().cpu())
    return torch.cat(parts)


VALUE_ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, float("inf"))


def _value_predictor(x: torch.Tensor, values: torch.Tensor, alpha: float):
    """Ridge regression of every schedule's J on standardised features; returns x_new -> (n, M) predicted J."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    y_mean = values.mean(0)
    if alpha == float("inf"):
        return lambda x_new: y_mean.expand(x_new.shape[0], -1)
    z = ((x - mean) / std).double()
    gram = z.T @ z + alpha * torch.eye(z.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, z.T @ (values.double() - y_mean.double()))
    return lambda x_new: (((x_new - mean) / std).double() @ w).float() + y_mean


def value_targets(
    x: torch.Tensor, values: torch.Tensor, alphas: Sequence[float] = VALUE_ALPHAS, folds: int = 4, seed: int = 0
) -> tuple[list[int], float, dict[str, float]]:
    """Per prompt, the schedule with the largest cross-validated *predicted* J (see the module docstring).

    ``x`` (N, D) features, ``values`` (N, M) decoded J. The penalty is the one whose fits, made without a fold,
    pick schedules with the largest actual J on that fold (mean over folds); on ties the larger penalty wins.
    Returns (target schedule per prompt, chosen penalty, mean held-out J per penalty).
    """
    n = x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [order[i::folds] for i in range(min(folds, n))]
    cv: dict[str, float] = {}
    for alpha in alphas:
        total = 0.0
        for held in parts:
            keep = torch.ones(n, dtype=torch.bool)
            keep[held] = False
            picks = _value_predictor(x[keep], values[keep], alpha)(x[held]).argmax(1)
            total += float(values[held, picks].sum())
        cv[f"{alpha:g}"] = total / n
    chosen = max(alphas, key=lambda a: (round(cv[f"{a:g}"], 6), a))
    targets = _value_predictor(x, values, chosen)(x).argmax(1)
    return [int(i) for i in targets], chosen, cv


def fit_lambda(
    decoder: PandaDecoder,
    prompts: Sequence[str],
    grid: Sequence[ExponentialDecayLambda],
    *,
    max_new_tokens: int = 64,
    objective: SelectionObjective | None = None,
    weights: Weights = None,
    preference_features: torch.Tensor | None = None,
    kind: Literal["ridge", "mlp"] = "ridge",
    ridge_alpha: float = 1.0,
    target: Literal["best", "value"] = "best",
    max_rows: int = 64,
    measure: bool = True,
    progress: bool = False,
    **decode_options,
) -> tuple[LearnedLambda, LambdaFitReport]:
    """Decode ``grid`` for every prompt, take each prompt's target schedule (``target``, see the module docstring),
    fit a ``LearnedLambda`` to it.

    ``decode_options`` go to ``PandaDecoder.generate`` (top_k, greedy, ...). With ``measure`` the fitted model
    decodes the prompts once more, so the report holds its real mean J next to the fixed and oracle ones.
    """
    started = time.perf_counter()
    objective = objective or SelectionObjective()
    scorer = ResponseScorer(decoder)
    labels = [lambda_label(s) for s in grid]
    bar = tqdm(total=len(prompts), desc="lambda grid", unit="prompt", disable=not progress)
    grids = decode_lambda_grid(
        decoder,
        prompts,
        list(grid),
        objective=objective,
        weights=weights,
        preference_features=preference_features,
        max_rows=max_rows,
        scorer=scorer,
        progress=bar,
        max_new_tokens=max_new_tokens,
        **decode_options,
    )
    bar.close()
    values = torch.tensor([g.values for g in grids])  # (N, M)
    best = [g.best for g in grids]
    mean = values.mean(0)
    fixed = int(mean.argmax())

    features = prompt_features(decoder, prompts)
    value_alpha: float | None = None
    cv_value: dict[str, float] = {}
    targets = best
    if target == "value":
        x = features if preference_features is None else torch.cat([features, preference_features.float()], 1)
        targets, value_alpha, cv_value = value_targets(x, values)
    model = LearnedLambda.fit(
        LambdaTrainingSet(
            features, [grid[i] for i in targets], horizon=max_new_tokens, preference_features=preference_features
        ),
        kind=kind,
        ridge_alpha=ridge_alpha,
        base_model=str(getattr(decoder.model.config, "_name_or_path", "")),
    )
    learned_value = None
    if measure:
        learned = decode_lambda_grid(
            decoder,
            prompts,
            [model],
            objective=objective,
            weights=weights,
            preference_features=preference_features,
            max_rows=max_rows,
            scorer=scorer,
            max_new_tokens=max_new_tokens,
            **decode_options,
        )
        learned_value = sum(g.values[0] for g in learned) / len(learned)
    counts = Counter(labels[i] for i in best)
    target_counts = Counter(labels[i] for i in targets)
    report = LambdaFitReport(
        prompts=len(prompts),
        max_new_tokens=max_new_tokens,
        beta=objective.beta,
        gamma=objective.gamma,
        grid=labels,
        mean_value={label: float(v) for label, v in zip(labels, mean)},
        best_counts={label: counts.get(label, 0) for label in labels},
        best_fixed=labels[fixed],
        best_fixed_value=float(mean[fixed]),
        oracle_value=float(values.max(1).values.mean()),
        learned_value=learned_value,
        kind=kind,
        target=target,
        value_alpha=value_alpha,
        cv_value=cv_value,
        train_rmse=float(model.config.training["train_rmse"]),
        seconds=time.perf_counter() - started,
    )
    model.config = model.config.model_copy(
        update={
            "training": model.config.training
            | {
                "objective": {"beta": objective.beta, "gamma": objective.gamma},
                "grid": labels,
                "best_fixed": report.best_fixed,
                "oracle_value": report.oracle_value,
                "learned_value": learned_value,
                "target": target,
                "target_counts": {label: target_counts.get(label, 0) for label in labels},
                "value_alpha": value_alpha,
            }
        }
    )
    return model, report
