"""The demo-model recipe in --quick mode: runs end to end in seconds, deterministic given its seed, loadable output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from panda_chat.demo.corpus import POLES
from panda_chat.demo.recipe.pipeline import REPORT_FILE, RecipeConfig, run_recipe
from panda_chat.lam.learned import LearnedLambda
from panda_chat.rewards.heads import RewardHead

pytestmark = pytest.mark.slow


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(out: Path) -> dict[str, str]:
    files = [
        out / "base" / "model.safetensors",
        out / "base" / "tokenizer.json",
        *(out / "heads").glob("*.safetensors"),
        *(out / "reward_models").glob("*/model.safetensors"),
        out / "lambda.safetensors",
    ]
    return {str(p.relative_to(out)): _digest(p) for p in files}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread count can change float summation order; fix it for the determinism check
    try:
        a, b = tmp_path_factory.mktemp("recipe_a"), tmp_path_factory.mktemp("recipe_b")
        run_recipe(a, RecipeConfig.quick(seed=7), progress=False)
        run_recipe(b, RecipeConfig.quick(seed=7), progress=False)
    finally:
        torch.set_num_threads(threads)
    return a, b


def test_quick_recipe_is_deterministic_given_its_seed(quick_runs: tuple[Path, Path]) -> None:
    a, b = quick_runs
    weights_a = _weights(a)
    assert len(weights_a) == 2 + len(POLES) + 2
    assert weights_a == _weights(b)


def test_quick_recipe_writes_loadable_models_cards_and_report(quick_runs: tuple[Path, Path]) -> None:
    out, _ = quick_runs
    report = json.loads((out / REPORT_FILE).read_text())
    assert {h["pole"] for h in report["heads"]} == set(POLES)
    assert all(0.0 <= h["heldout_accuracy"] <= 1.0 for h in report["heads"])
    assert report["base"]["parameters"] > 0 and report["file_sizes_bytes"]["base/model.safetensors"] > 0
    for card in (
        out / "base" / "README.md",
        out / "heads" / "README.md",
        out / report["reward_model"]["folder"] / "README.md",
    ):
        text = card.read_text()
        assert "## Data" in text and "Reproduce" in text

    tokenizer = AutoTokenizer.from_pretrained(out / "base")
    model = AutoModelForCausalLM.from_pretrained(out / "base")
    assert tokenizer.eos_token == "<|end|>" and tokenizer.chat_template
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    for pole in POLES:
        RewardHead.load(out / "heads" / f"{pole}.safetensors").check_base(model)
    LearnedLambda.load(out / "lambda.safetensors")
    assert "## Learned lambda" in (out / "README.md").read_text()
    rm = AutoModelForSequenceClassification.from_pretrained(out / report["reward_model"]["folder"])
    assert rm.config.num_labels == 1
