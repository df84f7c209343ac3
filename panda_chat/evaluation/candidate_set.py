"""The lambda candidate set Lambda = {lambda_1..lambda_M}: decode every candidate, keep the best whole response.

``decode_lambda_grid`` is the shared machinery: for each prompt it decodes the unguided response (lambda = 0) and one
response per candidate lambda, all as rows of the same batches (``max_rows`` rows per ``generate`` call), then scores
every response (``ResponseScorer``) and computes J against that prompt's unguided response (``objective``).

``LambdaCandidateSet`` keeps, per prompt, the response with the largest J = R - beta * fluency loss. It never takes
an argmax over lambda per token (that always picks the largest lambda when the reward is positive). Lambda fitting and
the ARGS baseline reuse the same grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from panda_chat.decoding import GenerationOutput, PandaDecoder
from panda_chat.evaluation.objective import ScoredResponse, SelectionObjective, select_best
from panda_chat.evaluation.scoring import ResponseScorer, Weights
from panda_chat.lam.base import LambdaFunction

LambdaChoice = float | LambdaFunction


def lambda_label(lam: LambdaChoice) -> str:
    """A short name for a lambda in tables and JSON ("1.5", "exp:2:0.95", ...)."""
    if isinstance(lam, (int, float)):
        return f"{float(lam):g}"
    label = getattr(lam, "label", None)
    return label() if callable(label) else repr(lam)


@dataclass
class PromptGrid:
    """One prompt's responses under every candidate lambda, scored, with J relative to the unguided response."""

    prompt: str
    unguided: GenerationOutput
    unguided_score: ScoredResponse
    outputs: list[GenerationOutput]  # one per candidate lambda, in order
    scores: list[ScoredResponse]
    values: list[float]  # J of each candidate

    @property
    def best(self) -> int:
        return select_best(self.values)


def _row_weights(weights: Weights, n_prompts: int, per_prompt: int) -> Weights:
    if weights is None or isinstance(weights, Mapping):
        return weights
    if len(weights) != n_prompts:
        raise ValueError(f"{n_prompts} prompts but {len(weights)} weight mappings")
    return [w for w in weights for _ in range(per_prompt)]


def decode_lambda_grid(
    decoder: PandaDecoder,
    prompts: Sequence[str],
    lambdas: Sequence[LambdaChoice],
    *,
    objective: SelectionObjective | None = None,
    weights: Weights = None,
    preference_features: torch.Tensor | None = None,
    max_rows: int = 64,
    scorer: ResponseScorer | None = None,
    progress=None,
    **decode_options,
) -> list[PromptGrid]:
    """Decode each prompt unguided and under every lambda (rows of shared batches), score and compute J.

    ``decode_options`` go to ``PandaDecoder.generate`` (top_k, max_new_tokens, greedy, ...). ``progress``: an
    optional tqdm-like bar updated with the number of prompts done.
    """
    if not lambdas:
        raise ValueError("the lambda candidate set is empty")
    objective = objective or SelectionObjective()
    scorer = scorer or ResponseScorer(decoder)
    row_lambdas: list[LambdaChoice] = [0.0, *lambdas]
    per_prompt = len(row_lambdas)
    chunk = max(1, max_rows // per_prompt)
    grids: list[PromptGrid] = []
    for start in range(0, len(prompts), chunk):
        part = list(prompts[start : start + chunk])
        rows = [p for p in part for _ in range(per_prompt)]
        part_weights = weights if weights is None or isinstance(weights, Mapping) else weights[start : start + chunk]
        row_weights = _row_weights(part_weights, len(part), per_prompt)
        prefs = None
        if preference_features is not None:
            prefs = preference_features[start : start + chunk].repeat_interleave(per_prompt, dim=0)
        outputs = decoder.generate(
            rows, weights=row_weights, lam=row_lambdas * len(part), preference_features=prefs, **decode_options
        )
        scored = scorer.score(rows, outputs, weights=row_weights)
        for i, prompt in enumerate(part):
            outs = outputs[i * per_prompt : (i + 1) * per_prompt]
            scs = scored[i * per_prompt : (i + 1) * per_prompt]
            grids.append(
                PromptGrid(
                    prompt=prompt,
                    unguided=outs[0],
                    unguided_score=scs[0],
                    outputs=outs[1:],
                    scores=scs[1:],
                    values=[objective.value(s, scs[0]) for s in scs[1:]],
                )
            )
        if progress is not None:
            progress.update(len(part))
    return grids


@dataclass
class CandidateSetChoice:
    """The response kept for one prompt and why."""

    output: GenerationOutput
    index: int  # which candidate lambda produced it
    label: str
    value: float  # its J
    grid: PromptGrid


class LambdaCandidateSet:
    """Decode lambda_1..lambda_M for each prompt and keep the response with the largest J (see module docstring)."""

    def __init__(
        self, lambdas: Sequence[LambdaChoice], objective: SelectionObjective | None = None, max_rows: int = 64
    ):
        if not lambdas:
            raise ValueError("the lambda candidate set is empty")
        self.lambdas = list(lambdas)
        self.objective = objective or SelectionObjective()
        self.max_rows = max_rows

    def generate(self, decoder: PandaDecoder, prompts: Sequence[str], **options) -> list[CandidateSetChoice]:
        """``options``: weights, preference_features, scorer, progress and ``PandaDecoder.generate`` options."""
        grids = decode_lambda_grid(
            decoder, prompts, self.lambdas, objective=self.objective, max_rows=self.max_rows, **options
        )
        return [self.choose(grid) for grid in grids]

    def choose(self, grid: PromptGrid) -> CandidateSetChoice:
        best = grid.best
        return CandidateSetChoice(
            output=grid.outputs[best],
            index=best,
            label=lambda_label(self.lambdas[best]),
            value=grid.values[best],
            grid=grid,
        )
