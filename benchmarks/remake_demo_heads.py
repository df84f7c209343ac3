"""Re-make the demo base LM's reward heads with `bootstrap_heads`, measuring old and new heads on one held-out split.

    python benchmarks/remake_demo_heads.py [--pairs 600] [--max-prefixes 48] [--write] [--json FILE]

The heads are built exactly as `panda-chat reward bootstrap` builds them for any model (token-level MLP heads from
the shipped style corpus, `default_head_config`), with more corpus pairs per pole and more compared prefixes per
pair than the command's defaults, into a scratch folder. Both the shipped heads and the new ones are then scored on
the same held-out pairs (held-out topics, `DialogueCorpus(0)`, 100 pairs per pole, the split
`bench_personalize.py` uses): pairwise accuracy on complete answers and at every compared token prefix. With
`--write` the new heads replace `panda_chat/demo/models/heads/` and the manifest `base/panda_heads.json` (the
fitted lambda entry kept). The demo base LM is not touched.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.demo import demo_head_paths, demo_model_dir
from panda_chat.demo.corpus import POLES, DialogueCorpus, style_pair_source
from panda_chat.rewards.bootstrap import HEADS_FOLDER, bootstrap_heads, default_head_config
from panda_chat.rewards.heads import RewardHead
from panda_chat.rewards.manifest import MANIFEST_FILE, HeadsManifest
from panda_chat.rewards.token_level import PrefixFeaturizer, pair_accuracy


def heldout_accuracy(model, tokenizer, heads: dict[str, RewardHead]) -> dict[str, dict[str, float | None]]:
    """Pole -> complete/partial accuracy on the benchmark's held-out split."""
    corpus = DialogueCorpus(0)
    result = {}
    for pole, head in heads.items():
        featurizer = PrefixFeaturizer(model, tokenizer, features=head.config.features)  # what this head reads
        complete, partial = pair_accuracy(head, featurizer.pairs(corpus.preference_pairs(pole, 100, "heldout"), seed=9))
        result[pole] = {"complete": complete, "partial": partial}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=600, help="corpus pairs per pole (a tenth kept for validation)")
    parser.add_argument("--max-prefixes", type=int, default=48, help="compared prefixes per pair")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="replace the shipped heads and manifest")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = demo_model_dir()
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    old = {pole: RewardHead.load(path) for pole, path in demo_head_paths().items() if pole in POLES}
    result: dict = {
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "machine": platform.machine(),
        "threads": args.threads,
        "pairs_per_pole": args.pairs,
        "max_prefixes": args.max_prefixes,
        "before": heldout_accuracy(model, tokenizer, old),
    }
    with tempfile.TemporaryDirectory() as scratch:
        report = bootstrap_heads(
            model,
            tokenizer,
            scratch,
            base_model="panda_chat/demo/models/base",
            pair_source=style_pair_source(0, pairs_per_pole=args.pairs, heldout_per_pole=max(args.pairs // 4, 10)),
            config=default_head_config(0),
            max_prefixes=args.max_prefixes,
            log=lambda line: print(line, flush=True),
        )
        new = {pole.pole: RewardHead.load(Path(scratch) / pole.path) for pole in report.poles}
        result["bootstrap_s"] = report.seconds
        result["after"] = heldout_accuracy(model, tokenizer, new)
        for pole in new:
            before, after = result["before"][pole], result["after"][pole]
            print(
                f"  {pole:<11} partial {before['partial']:.3f} -> {after['partial']:.3f}   "
                f"complete {before['complete']:.3f} -> {after['complete']:.3f}",
                flush=True,
            )
        if args.write:
            write_heads(Path(scratch), base)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout)
    print()


def write_heads(scratch: Path, base: Path) -> None:
    """Copy the new heads next to the base LM's folder and re-point its manifest at them (the lambda entry kept)."""
    shipped = HeadsManifest.load(base)
    made = HeadsManifest.load(scratch)
    if made is None:
        raise RuntimeError(f"no manifest was written into {scratch}")
    heads_dir = base.parent / HEADS_FOLDER
    for entry in made.heads.values():
        shutil.copyfile(scratch / entry.path, heads_dir / Path(entry.path).name)
        entry.path = f"../{HEADS_FOLDER}/{Path(entry.path).name}"
    made.lam = shipped.lam if shipped is not None else made.lam
    made.save(base)
    print(f"wrote {len(made.heads)} heads into {heads_dir} and {base / MANIFEST_FILE}", flush=True)


if __name__ == "__main__":
    main()
