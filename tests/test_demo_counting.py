"""How ``panda-chat demo`` counts a personalised answer as moved toward its user, and explains an unchanged one."""

from __future__ import annotations

from panda_chat.cli.demo import _dimensions_leaning, _dimensions_moved

DIMENSIONS = {"verbosity": ("concise", "detailed"), "tone": ("friendly", "formal")}
INFERRED = {"verbosity": "concise", "tone": "friendly"}


def test_an_answer_counts_as_moved_only_where_its_margin_grew_over_the_unguided_one() -> None:
    unguided = {"concise": 1.0, "detailed": -1.0, "friendly": 0.0, "formal": 0.0}
    own = {"concise": 1.5, "detailed": -1.2, "friendly": -0.5, "formal": 0.5}
    assert _dimensions_moved(own, unguided, INFERRED, DIMENSIONS) == ["concise"]
    assert _dimensions_moved(unguided, unguided, INFERRED, DIMENSIONS) == []  # unchanged: never "moved"


def test_an_unchanged_answer_reports_the_inferred_poles_it_already_leans_toward() -> None:
    rewards = {"concise": 1.4, "detailed": -2.1, "friendly": -0.3, "formal": 0.2}
    assert _dimensions_leaning(rewards, INFERRED, DIMENSIONS) == ["concise"]
    assert _dimensions_leaning(rewards, {"verbosity": "detailed", "tone": "formal"}, DIMENSIONS) == ["formal"]
