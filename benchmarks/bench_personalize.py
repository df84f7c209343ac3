"""Personalisation benchmarks in one run: bootstrap time, head-speed steering on a non-demo model, partial accuracy.

    python benchmarks/bench_personalize.py [--json results.json] [--pairs 200] [--threads 1]

1. **Bootstrap** (`panda_chat.rewards.bootstrap`): the time to build a head for every default pole on a random-init
   Llama that is not the demo model (hidden 256, 4 layers, a local BPE tokenizer with a chat template), and on the
   demo base LM, from the shipped style corpus.
2. **Speed**: `ChatPanda` steering a user with explicit preferences on all three dimensions (six bootstrapped heads
   weighted) vs `personalize=False`, on that non-demo model, greedy, 64 new tokens; runs interleaved, the fastest
   of each kept. Ratio of output tokens per second (and of the medians, with the load average before and after: the
   machine may be shared). The same with fewer candidates per step (``--fewer-candidates``, top_k 5 and 3 by
   default; the default top_k is 10): what steering costs when a deployment trades candidates for speed.
3. **Partial-answer accuracy, before/after**: on the demo base LM, per pole, a head trained the old way
   (`train_reward_head`: complete answers plus answers cut after some words, linear, last hidden state) against
   token-level heads (`bootstrap_heads`) on the last hidden state only and on the last state plus the answer's
   running mean (the default), on the same number of corpus pairs, all measured on held-out topics at every token
   prefix after the answers differ (and on complete answers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.chat_model import ChatPanda
from panda_chat.demo import demo_model_dir
from panda_chat.demo.corpus import POLES, DialogueCorpus, style_pair_source
from panda_chat.rewards.bootstrap import bootstrap_heads, default_head_config
from panda_chat.rewards.token_level import PrefixFeaturizer, pair_accuracy
from panda_chat.rewards.training import RewardTrainingConfig, train_reward_head
from panda_chat.tiny_models import build_causal_lm, sample_corpus, train_tokenizer
from profiles import ProfileStore


def build_other_model(folder: Path) -> Path:
    tokenizer = train_tokenizer(sample_corpus(2000) + list(DialogueCorpus(0).iter_texts(300)), vocab_size=2048)
    return build_causal_lm(
        folder,
        tokenizer,
        seed=3,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def time_bootstrap(model_dir: Path, out: Path, pairs: int) -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    started = time.perf_counter()
    bootstrap_heads(
        model, tokenizer, out, base_model=str(model_dir), pair_source=style_pair_source(0, pairs, max(pairs // 4, 10))
    )
    return time.perf_counter() - started


def chat_speed(model_dir: Path, db: Path, rounds: int, tokens: int, top_k: int = 10) -> dict:
    store = ProfileStore(db, embedder="hashing")
    for dimension, pole in (("expertise", "expert"), ("verbosity", "detailed"), ("tone", "formal")):
        store.set_preference("ann", dimension, pole)
    common = dict(
        model=str(model_dir), store=store, user_id="ann", max_tokens=tokens, device="cpu", record=False, top_k=top_k
    )
    runs = {"personalised": ChatPanda(**common), "personalize=False": ChatPanda(**common, personalize=False)}
    rates: dict[str, list[float]] = {label: [] for label in runs}
    kinds = None
    load_before = os.getloadavg()[0]
    for _ in range(rounds):
        for label, llm in runs.items():
            started = time.perf_counter()
            answer = llm.invoke("How does a bicycle stay upright?")
            seconds = time.perf_counter() - started
            rates[label].append(answer.usage_metadata["output_tokens"] / seconds)
            if label == "personalised":
                kinds = answer.response_metadata["personalization"]["reward_kinds"]
    store.close()
    best = {label: max(values) for label, values in rates.items()}
    median = {label: statistics.median(values) for label, values in rates.items()}
    return {
        "top_k": top_k,
        "tok_s": best,
        "ratio": best["personalised"] / best["personalize=False"],
        # the machine is shared: the median of the rounds and the load say how much the best-of ratio can be trusted
        "ratio_median": median["personalised"] / median["personalize=False"],
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "reward_kinds": kinds,
    }


def partial_accuracy(pairs: int) -> list[dict]:
    """Per pole: the old complete-answer linear head, a token-level head on the last hidden state only (the previous
    bootstrap) and one on the last state plus the answer's running mean (the current bootstrap), on one held-out
    split, each read with the features it was trained on."""
    from panda_chat.rewards.features import ResponseFeaturizer
    from panda_chat.rewards.heads import RewardHead

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir()).eval()
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir())
    corpus = DialogueCorpus(0)
    featurizers = {kind: PrefixFeaturizer(model, tokenizer, features=kind) for kind in ("last", "last+mean")}
    rows = []
    for pole in POLES:
        heldout_pairs = corpus.preference_pairs(pole, 100, split="heldout")
        heldout = {kind: f.pairs(heldout_pairs, seed=9) for kind, f in featurizers.items()}
        old = train_reward_head(
            (model, tokenizer),
            corpus.preference_pairs(pole, pairs) + corpus.prefix_pairs(pole, pairs),
            name=pole,
            config=RewardTrainingConfig(epochs=30),
            featurizer=ResponseFeaturizer(model, tokenizer, features="last"),
        ).head
        token_level = {}
        for kind in ("last", "last+mean"):
            with tempfile.TemporaryDirectory() as scratch:
                report = bootstrap_heads(
                    model,
                    tokenizer,
                    scratch,
                    config=default_head_config(),
                    pair_source=lambda _, p, pole=pole: (
                        (corpus.preference_pairs(pole, pairs), []) if p == pole else None
                    ),
                    catalog=_one_pole_catalog(pole),
                    features=kind,
                )
                token_level[kind] = RewardHead.load(Path(scratch) / report.poles[0].path)
        before = pair_accuracy(old, heldout["last"])
        last = pair_accuracy(token_level["last"], heldout["last"])
        after = pair_accuracy(token_level["last+mean"], heldout["last+mean"])
        rows.append(
            {
                "pole": pole,
                "before_complete": before[0],
                "before_partial": before[1],
                "token_last_complete": last[0],
                "token_last_partial": last[1],
                "after_complete": after[0],
                "after_partial": after[1],
            }
        )
        print(
            f"  {pole:<11} partial {before[1]:.3f} -> {last[1]:.3f} -> {after[1]:.3f}   "
            f"complete {before[0]:.3f} -> {last[0]:.3f} -> {after[0]:.3f}",
            flush=True,
        )
    return rows


def _one_pole_catalog(pole: str):
    from profiles.catalog import PreferenceCatalog

    catalog = PreferenceCatalog.default()
    for dimension in catalog.dimensions:
        if pole in dimension.pole_names:
            return PreferenceCatalog(
                dimensions=[dimension.model_copy(update={"poles": [p for p in dimension.poles if p.name == pole]})]
            )
    raise ValueError(pole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=200, help="corpus pairs per pole")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument(
        "--fewer-candidates",
        type=int,
        nargs="*",
        default=[5, 3],
        help="also time these top_k (the default is 10): what steering costs with fewer candidates per step",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "machine": platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "pairs_per_pole": args.pairs,
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        other = build_other_model(root / "other")
        result["bootstrap_s"] = {
            "other model": time_bootstrap(other, other, args.pairs),
            "demo model": time_bootstrap(demo_model_dir(), root / "demo-heads", args.pairs),
        }
        print(f"bootstrap: {result['bootstrap_s']}", flush=True)
        result["speed"] = chat_speed(other, root / "p.db", args.rounds, 64)
        result["speed_fewer_candidates"] = [
            chat_speed(other, root / f"p{k}.db", args.rounds, 64, top_k=k) for k in args.fewer_candidates
        ]
        for speed in [result["speed"], *result["speed_fewer_candidates"]]:
            print(
                f"ChatPanda top_k={speed['top_k']} tok/s: {speed['tok_s']}; ratio {speed['ratio']:.2f} "
                f"(median {speed['ratio_median']:.2f}, load {speed['load_average']}) ({speed['reward_kinds']})",
                flush=True,
            )
    if not args.skip_accuracy:
        print(
            "partial-answer accuracy on held-out topics, old heads -> token-level on the last state -> "
            "token-level on the last state and the answer's mean:",
            flush=True,
        )
        result["accuracy"] = partial_accuracy(args.pairs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
