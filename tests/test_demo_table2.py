"""The Table 2 driver on the shipped demo models: per-pole users, one evaluation row per method, curves, markdown."""

from __future__ import annotations

import pytest

from panda_chat.decoding import PandaDecoder
from panda_chat.demo import demo_head_paths, demo_lambda_path, demo_model_dir
from panda_chat.demo.corpus import POLES, DialogueCorpus, opposite_pole
from panda_chat.demo.recipe.table2 import CURVE_GRID, markdown, run_pole, user_for
from panda_chat.lam.learned import LearnedLambda
from profiles.embedders import resolve_embedder

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("pole", POLES)
def test_a_table2_user_wants_one_pole_fully(pole: str) -> None:
    assert user_for(pole).steering() == {pole: 1.0, opposite_pole(pole): -1.0}


def test_run_pole_measures_every_method_and_the_lambda_curve() -> None:
    decoder = PandaDecoder.from_pretrained(
        str(demo_model_dir()),
        rewards={p: str(h) for p, h in demo_head_paths().items()},
        device="cpu",
        dtype="float32",
    )
    questions = DialogueCorpus(0).prompts(2, split="heldout")
    result = run_pole(
        decoder,
        "formal",
        questions,
        LearnedLambda.load(demo_lambda_path()),
        resolve_embedder("hashing"),
        max_new_tokens=6,
        progress=False,
    )
    assert [r["method"] for r in result["eval"]["results"]] == ["greedy", "args", "panda"]
    assert [c["lam"] for c in result["curve"]] == [0.0, *CURVE_GRID]
    assert len(result["failure_examples"]) == 2
    text = markdown([result], {"prompts": 2, "top_k": 10, "max_new_tokens": 6, "seconds": 1.0})
    assert "| formal | panda |" in text and "Figure 5" in text
