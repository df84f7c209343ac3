"""Comparing decoding methods on one prompt set: the table of the paper's Table 2 (method x metric).

Methods (every one decodes with the same base model, rewards, weights, top-k and greedy choice):

* ``greedy``: the base model alone (lambda = 0).
* ``args``: ARGS, a constant lambda; the one with the best mean J over these prompts is reported, which is the
  most favourable choice for the baseline (it is tuned on the very prompts it is scored on).
* ``panda``: the learned context-aware lambda(x, t) (``--lambda-model``, fitted by ``panda-chat lambda fit``).
* ``panda-set``: the lambda candidate set over the same grid: per prompt, the response with the best J.

``greedy``, ``args`` and ``panda-set`` come from one shared grid decode (unguided + every grid lambda, as rows of
shared batches); ``panda`` decodes once more with its model. Every response is re-scored teacher-forced
(``ResponseScorer``), so R is measured the same way for every method. Metrics are ``panda_chat.metrics``' (rep-n,
diversity, coherence, average R), plus the mean J and mean fluency loss against the unguided answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from panda_chat.decoding import PandaDecoder
from panda_chat.evaluation.candidate_set import PromptGrid, decode_lambda_grid, lambda_label
from panda_chat.evaluation.objective import ScoredResponse, SelectionObjective, select_best
from panda_chat.evaluation.scoring import ResponseScorer, Weights
from panda_chat.lam.base import LambdaFunction
from panda_chat.metrics import GenerationMetrics, generation_metrics
from panda_chat.prompt_format import question_prompt

METHODS = ("greedy", "args", "panda", "panda-set")


class MethodResult(BaseModel):
    method: str
    lam: str  # the lambda used: "0", the ARGS constant, the learned model, or "candidate set"
    metrics: GenerationMetrics
    mean_objective: float  # mean J against the unguided responses (0 for greedy)
    mean_fluency_loss: float
    responses: list[str]


class EvaluationReport(BaseModel):
    prompts: int
    max_new_tokens: int
    top_k: int
    beta: float
    gamma: float
    lam_grid: list[str]
    results: list[MethodResult]
    seconds: float

    def markdown(self) -> str:
        """The method x metric table."""
        lines = [
            "| method | lambda | rep-2 | rep-3 | rep-4 | diversity | coherence | avg reward | J |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.results:
            m = r.metrics
            coherence = "n/a" if m.coherence is None else f"{m.coherence:.3f}"
            reward = "n/a" if m.avg_reward is None else f"{m.avg_reward:.3f}"
            lines.append(
                f"| {r.method} | {r.lam} | {m.rep_2:.2f} | {m.rep_3:.2f} | {m.rep_4:.2f} | "
                f"{m.diversity:.3f} | {coherence} | {reward} | {r.mean_objective:.3f} |"
            )
        return "\n".join(lines)


def evaluate(
    decoder: PandaDecoder,
    prompts: Sequence[str],
    methods: Sequence[str] = ("greedy", "args", "panda-set"),
    *,
    lam_grid: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    lambda_model: LambdaFunction | None = None,
    objective: SelectionObjective | None = None,
    weights: Weights = None,
    preference_features: torch.Tensor | None = None,
    embedder=None,
    with_coherence: bool = True,
    chat_template: bool = True,
    max_new_tokens: int = 64,
    top_k: int = 10,
    max_rows: int = 64,
    progress: bool = False,
) -> EvaluationReport:
    """Decode ``prompts`` with each method and measure it (see the module docstring).

    ``prompts`` are user prompts; with ``chat_template`` they are wrapped in the base tokenizer's chat template (as
    the chat model and reward training do). Coherence compares the user prompt with the response.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if "panda" in methods and lambda_model is None:
        raise ValueError("method 'panda' needs a fitted lambda model (panda-chat lambda fit; --lambda-model FILE)")
    if not prompts:
        raise ValueError("no prompts to evaluate")
    started = time.perf_counter()
    objective = objective or SelectionObjective()
    texts = [question_prompt(decoder.tokenizer, p) for p in prompts] if chat_template else list(prompts)
    scorer = ResponseScorer(decoder)
    options: dict[str, Any] = dict(
        objective=objective,
        weights=weights,
        preference_features=preference_features,
        max_rows=max_rows,
        scorer=scorer,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        greedy=True,
    )
    if with_coherence:
        from profiles.embedders import resolve_embedder

        embedder = resolve_embedder(embedder)  # load once for every method

    def row(
        method: str,
        lam: str,
        outputs,
        scores: list[ScoredResponse],
        values: list[float],
        unguided: list[ScoredResponse],
    ) -> MethodResult:
        responses = [o.text for o in outputs]
        metrics = generation_metrics(
            prompts, responses, [s.reward for s in scores], embedder=embedder, with_coherence=with_coherence
        )
        fluency = [objective.fluency_loss(s, u) for s, u in zip(scores, unguided)]
        return MethodResult(
            method=method,
            lam=lam,
            metrics=metrics,
            mean_objective=sum(values) / len(values),
            mean_fluency_loss=sum(fluency) / len(fluency),
            responses=responses,
        )

    results: list[MethodResult] = []
    grid_lambdas = [float(v) for v in lam_grid]
    bar = tqdm(total=len(prompts), desc="grid decode", unit="prompt", disable=not progress)
    grids: list[PromptGrid] = decode_lambda_grid(decoder, texts, grid_lambdas, progress=bar, **options)
    bar.close()
    unguided = [g.unguided_score for g in grids]
    for method in methods:
        if method == "greedy":
            results.append(row("greedy", "0", [g.unguided for g in grids], unguided, [0.0] * len(grids), unguided))
        elif method == "args":
            means = [sum(g.values[j] for g in grids) / len(grids) for j in range(len(grid_lambdas))]
            j = select_best(means)
            results.append(
                row(
                    "args",
                    lambda_label(grid_lambdas[j]),
                    [g.outputs[j] for g in grids],
                    [g.scores[j] for g in grids],
                    [g.values[j] for g in grids],
                    unguided,
                )
            )
        elif method == "panda-set":
            best = [g.best for g in grids]
            results.append(
                row(
                    "panda-set",
                    "candidate set",
                    [g.outputs[b] for g, b in zip(grids, best)],
                    [g.scores[b] for g, b in zip(grids, best)],
                    [g.values[b] for g, b in zip(grids, best)],
                    unguided,
                )
            )
        elif lambda_model is not None:  # panda (checked above): the learned lambda decodes once more; J is measured
            # against the same unguided responses
            learned = decode_lambda_grid(decoder, texts, [lambda_model], **options)
            scores = [g.scores[0] for g in learned]
            values = [objective.value(s, u) for s, u in zip(scores, unguided)]
            results.append(
                row("panda", lambda_label(lambda_model), [g.outputs[0] for g in learned], scores, values, unguided)
            )
    return EvaluationReport(
        prompts=len(prompts),
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        beta=objective.beta,
        gamma=objective.gamma,
        lam_grid=[lambda_label(v) for v in grid_lambdas],
        results=results,
        seconds=time.perf_counter() - started,
    )
