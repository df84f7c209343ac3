"""Evaluation metrics on hand-computed examples."""

import numpy as np
import pytest

from panda_chat.metrics import coherence, diversity, generation_metrics, ngram_counts, rep_n


def test_rep_n_by_hand():
    # "a b a b a": bigrams ab ba ab ba -> 2 distinct of 4 -> rep-2 = 50
    assert rep_n(["a b a b a"], 2) == pytest.approx(50.0)
    # trigrams aba bab aba -> 2 of 3 -> rep-3 = 33.33
    assert rep_n(["a b a b a"], 3) == pytest.approx(100 / 3)
    # 4-grams abab baba -> 2 of 2 -> 0
    assert rep_n(["a b a b a"], 4) == 0.0
    # distinct counts are per response and then summed: "x y" twice -> 1 + 1 distinct of 2 total -> 0
    assert rep_n(["x y", "x y"], 2) == 0.0
    # corpus pooling: "a a a" (1 distinct of 2) + "b c" (1 of 1) -> 1 - 2/3
    assert rep_n(["a a a", "b c"], 2) == pytest.approx(100 / 3)
    assert rep_n(["short"], 2) == 0.0 and ngram_counts("a b c", 4) == (0, 0)


def test_diversity_by_hand():
    texts = ["a b a b a"]
    assert diversity(texts) == pytest.approx((1 - 0.5) * (1 - 1 / 3) * 1.0)
    assert diversity(["the quick brown fox jumps"]) == 1.0
    # a loop: 1 distinct n-gram of 5, 4 and 3 -> (1/5) * (1/4) * (1/3)
    assert diversity(["la la la la la la"]) == pytest.approx(1 / 60)


def test_coherence_is_mean_cosine():
    vectors = {"p1": [1, 0], "r1": [1, 0], "p2": [1, 0], "r2": [0, 1]}

    def embed(texts):
        return np.array([vectors.get(t, [1, 1]) for t in texts], dtype=float)  # (the embedder wrapper probes once)

    assert coherence(["p1", "p2"], ["r1", "r2"], embed) == pytest.approx(0.5)


def test_generation_metrics_row():
    row = generation_metrics(["q"], ["a b a b a"], rewards=[1.0, 3.0], with_coherence=False)
    assert row.rep_2 == pytest.approx(50.0) and row.avg_reward == 2.0 and row.coherence is None
