"""Generation-quality metrics as ARGS (Khanov et al. 2024) reports them, following SimCTG's definitions.

Texts are split on whitespace (``str.split``), as in the reference code. For a corpus of responses:

* ``rep-n = 100 * (1 - U_n / T_n)``, where ``T_n`` is the total number of n-grams over all responses and ``U_n`` the
  sum over responses of each response's number of *distinct* n-grams. 0 means no n-gram repeats within any response;
  it grows as responses loop. (SimCTG's loop stops one n-gram early; here every n-gram of a response is counted.)
* ``diversity = prod_{n=2..4} (1 - rep-n / 100)``: 1 for text with no repeated 2/3/4-grams, 0 for a pure loop.
* ``coherence = mean_i cos(e(prompt_i), e(response_i))`` with ``e`` a sentence embedder (the profile store's default,
  all-MiniLM-L6-v2): how on-topic each response is.
* ``avg reward = mean_i R(x_i, y_i)``: the mean of whatever per-response reward the caller measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

REP_ORDERS = (2, 3, 4)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of a token list (empty when it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def ngram_counts(text: str, n: int) -> tuple[int, int]:
    """(distinct n-grams, total n-grams) of one whitespace-tokenised text."""
    grams = ngrams(text.split(), n)
    return len(set(grams)), len(grams)


def rep_n(texts: Sequence[str], n: int) -> float:
    """rep-n = 100 * (1 - sum_i distinct_n(y_i) / sum_i total_n(y_i)); 0 when no text has n tokens."""
    distinct = total = 0
    for text in texts:
        d, t = ngram_counts(text, n)
        distinct, total = distinct + d, total + t
    return 100.0 * (1.0 - distinct / total) if total else 0.0


def diversity(texts: Sequence[str]) -> float:
    """diversity = prod_{n=2,3,4} (1 - rep-n / 100)."""
    return float(np.prod([1.0 - rep_n(texts, n) / 100.0 for n in REP_ORDERS]))


def coherence(prompts: Sequence[str], responses: Sequence[str], embedder) -> float:
    """Mean cosine similarity of each prompt's and its response's sentence embeddings.

    ``embedder``: anything ``profiles.embedders.resolve_embedder`` accepts (None = the default all-MiniLM-L6-v2).
    """
    from profiles.embedders import encode_normalised, resolve_embedder

    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    if not prompts:
        return 0.0
    embedder = resolve_embedder(embedder)
    a = encode_normalised(embedder, list(prompts))
    b = encode_normalised(embedder, list(responses))
    return float(np.mean(np.sum(a * b, axis=1)))


class GenerationMetrics(BaseModel):
    """One method's row of the evaluation table."""

    rep_2: float
    rep_3: float
    rep_4: float
    diversity: float
    coherence: float | None = None
    avg_reward: float | None = None


def generation_metrics(
    prompts: Sequence[str],
    responses: Sequence[str],
    rewards: Sequence[float] | None = None,
    embedder=None,
    with_coherence: bool = True,
) -> GenerationMetrics:
    """All metrics of one set of responses (coherence needs an embedder; skip it with ``with_coherence=False``)."""
    return GenerationMetrics(
        rep_2=rep_n(responses, 2),
        rep_3=rep_n(responses, 3),
        rep_4=rep_n(responses, 4),
        diversity=diversity(responses),
        coherence=coherence(prompts, responses, embedder) if with_coherence else None,
        avg_reward=float(np.mean(rewards)) if rewards is not None and len(rewards) else None,
    )
