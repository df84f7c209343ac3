"""The one-command recipe that makes panda-chat's embedded demo models, deterministically from a seed.

    python -m panda_chat.demo.recipe --out panda_chat/demo/models [--seed 0] [--quick]

The stages are ``panda_chat.demo.recipe.pipeline.run_recipe``'s (corpus, tokenizer, base LM, reward heads, a full
reward model, lambda, model cards). ``--quick`` runs the same stages on a tiny model and a few hundred examples
(seconds): the tests use it.

Layout of ``--out``:

    base/                      causal LM + tokenizer (chat template, EOS), generation_config, README.md
    heads/<pole>.safetensors   one reward head per pole, README.md
    reward_models/<pole>/      full sequence-classification reward model (+ panda_reward.json), README.md
    lambda.safetensors         learned lambda(x, t) (+ lambda.json: what it was fitted on)
    recipe_report.json         the measured numbers the model cards quote
"""

from __future__ import annotations

import argparse

import torch

from panda_chat.demo.recipe.pipeline import RecipeConfig, run_recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m panda_chat.demo.recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, help="folder to write the models into (the shipped ones: panda_chat/demo/models)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny model, few examples: seconds, for tests")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (torch.set_num_threads)")
    parser.add_argument(
        "--reuse-base",
        action="store_true",
        help="keep the base LM already trained into --out with the same settings; redo the rest",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = RecipeConfig.quick(args.seed) if args.quick else RecipeConfig(seed=args.seed)
    report = run_recipe(args.out, config, reuse_base=args.reuse_base)
    print(
        f"[recipe] done in {report.total_seconds:.0f} s; base LM held-out loss {report.base.heldout_loss:.3f}; "
        + ", ".join(f"{h.pole} {h.heldout_accuracy:.3f}" for h in report.heads)
    )


if __name__ == "__main__":
    main()
