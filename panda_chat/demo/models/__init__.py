"""Where the embedded demo models live, for code that wants them without knowing the package layout.

The folder next to this file holds the models ``python -m panda_chat.demo.recipe`` made (shipped as package data):

    base/                      demo base LM + tokenizer          -> demo_model_dir()
    heads/<pole>.safetensors   one reward head per catalog pole  -> demo_head_paths()
    reward_models/<pole>/      a full reward model for one pole  -> demo_reward_model_dirs()
    lambda.safetensors         the fitted lambda(x, t)           -> demo_lambda_path()
    recipe_report.json         what the recipe measured          -> demo_report()

Every function raises ``DemoModelsMissing`` (a ``FileNotFoundError``) with the command that rebuilds the models
when a file is absent, e.g. in a source checkout where someone deleted them.
"""

from __future__ import annotations

import json
from pathlib import Path

DEMO_MODELS_DIR = Path(__file__).resolve().parent
_REBUILD = "python -m panda_chat.demo.recipe --out panda_chat/demo/models"


class DemoModelsMissing(FileNotFoundError):
    """A demo model file is not where the package ships it."""


def _require(path: Path) -> Path:
    if not path.exists():
        raise DemoModelsMissing(f"demo model file missing: {path}; rebuild the demo models with `{_REBUILD}`")
    return path


def demo_model_dir() -> Path:
    """The demo base LM's folder (``from_pretrained``-loadable: model, tokenizer with chat template and EOS)."""
    return _require(DEMO_MODELS_DIR / "base" / "config.json").parent


def demo_head_paths() -> dict[str, Path]:
    """Pole name (``elementary``, ``expert``, ``concise``, ``detailed``, ``friendly``, ``formal``) -> head file."""
    heads = _require(DEMO_MODELS_DIR / "heads")
    paths = {p.stem: p for p in sorted(heads.glob("*.safetensors"))}
    if not paths:
        raise DemoModelsMissing(f"no reward heads in {heads}; rebuild the demo models with `{_REBUILD}`")
    return paths


def demo_reward_model_dirs() -> dict[str, Path]:
    """Pole name -> folder of a full sequence-classification reward model for it."""
    root = _require(DEMO_MODELS_DIR / "reward_models")
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def demo_lambda_path() -> Path:
    """The fitted learned-lambda file (``panda_chat.lam.learned.LearnedLambda.load``)."""
    return _require(DEMO_MODELS_DIR / "lambda.safetensors")


def demo_report() -> dict:
    """The recipe's measured numbers (sizes, losses, accuracies, settings) as a dict."""
    return json.loads(_require(DEMO_MODELS_DIR / "recipe_report.json").read_text(encoding="utf-8"))
