"""Personalisation benchmarks in one run: bootstrap time, head-speed steering on a non-demo model, partial accuracy.

    python benchmarks/bench_personalize.py [--json results.json] [--pairs 200] [--threads 1]

1. **Bootstrap** (`panda_chat.rewards.bootstrap`): the time to build a head for every default pole on a random-init
   Llama that is not the demo model (hidden 256, 4 layers, a local BPE tokenizer with a chat template), and on the
   demo base LM, from the shipped style corpus.
2. **Speed**: `ChatPanda` steering a user with explicit preferences on all three dimensions (six bootstrapped heads
   weighted) vs `personalize=False`, on that non-demo model, greedy, 64 new tokens; runs interleaved, the fastest
   of each kept. Ratio of output tokens per second (and of the medians, with the load average before and after: the
   machine may be shared). Bootstrap's heads (``"prefix+token"``: no forward of the candidates), and the same poles
   as ``"last+mean"`` heads, which need the k candidates' forward every step. The same with fewer candidates per step
   (``--fewer-candidates``, top_k 5 and 3 by default; the default top_k is 10). With ``--larger``, both kinds again
   on a random-init model of Qwen2.5-0.5B's shape (hidden 896, 24 layers), speed only.
3. **Partial-answer accuracy, before/after**: on the demo base LM, per pole, a head trained the old way
   (`train_reward_head` on ``"last"`` features: complete answers plus answers cut after some words, linear) against
   token-level heads (`bootstrap_heads`) on the last hidden state only, on the last state plus the answer's running
   mean, and on the state before the last token, the mean before it and the token's embedding (the default), on the
   same number of corpus pairs, all measured on held-out topics at every token prefix after the answers differ (and
   on complete answers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
from panda_chat.rewards.heads import DEFAULT_FEATURES, HeadFeatures
from panda_chat.rewards.token_level import PrefixFeaturizer, pair_accuracy
from panda_chat.rewards.training import RewardTrainingConfig, train_reward_head
from panda_chat.tiny_models import build_causal_lm, sample_corpus, train_tokenizer
from profiles import ProfileStore

SMALL_SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
# Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 query / 2 key-value heads), with this script's 2,048-token vocabulary
LARGER_SHAPE = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
}


def build_other_model(folder: Path, shape: dict | None = None) -> Path:
    tokenizer = train_tokenizer(sample_corpus(2000) + list(DialogueCorpus(0).iter_texts(300)), vocab_size=2048)
    return build_causal_lm(folder, tokenizer, seed=3, **(shape or SMALL_SHAPE))


def head_kinds_speed(model_dir: Path, root: Path, rounds: int, tokens: int) -> dict:
    """Heads of each kind for every default pole on ``model_dir`` (``"prefix+token"`` into it, ``"last+mean"`` into a
    copy), built from the poles' words only (a few short forwards: on a model this size the corpus pairs would take
    most of an hour on this CPU, and a head's cost does not depend on how it was trained), then ``ChatPanda`` timed
    with each against ``personalize=False``: {kind: chat_speed result}."""
    on_candidates = root / f"{model_dir.name}-last-mean"
    shutil.copytree(model_dir, on_candidates, ignore=shutil.ignore_patterns("heads", "panda_heads.json"))
    folders = {DEFAULT_FEATURES: model_dir, "last+mean": on_candidates}
    result: dict = {}
    for kind, folder in folders.items():
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        bootstrap_heads(model, tokenizer, folder, base_model=str(folder), pair_source=lambda d, p: None, features=kind)
        del model
        result[kind] = chat_speed(folder, root / f"{folder.name}.db", rounds, tokens)
    return result


def time_bootstrap(model_dir: Path, out: Path, pairs: int, features: HeadFeatures = DEFAULT_FEATURES) -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    started = time.perf_counter()
    bootstrap_heads(
        model,
        tokenizer,
        out,
        base_model=str(model_dir),
        pair_source=style_pair_source(0, pairs, max(pairs // 4, 10)),
        features=features,
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


KINDS: tuple[HeadFeatures, ...] = ("last", "last+mean", "prefix+token")


def partial_accuracy(pairs: int) -> list[dict]:
    """Per pole: the old complete-answer linear head and a token-level head of each kind of features (``KINDS``),
    on one held-out split, each read with the features it was trained on."""
    from panda_chat.rewards.features import ResponseFeaturizer
    from panda_chat.rewards.heads import RewardHead

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir()).eval()
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir())
    corpus = DialogueCorpus(0)
    featurizers = {kind: PrefixFeaturizer(model, tokenizer, features=kind) for kind in KINDS}
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
        row: dict = {"pole": pole}
        row["before_complete"], row["before_partial"] = pair_accuracy(old, heldout["last"])
        for kind in KINDS:
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
                head = RewardHead.load(Path(scratch) / report.poles[0].path)
            row[f"{kind}_complete"], row[f"{kind}_partial"] = pair_accuracy(head, heldout[kind])
        rows.append(row)
        partial = " -> ".join(f"{row[f'{kind}_partial']:.3f}" for kind in KINDS)
        complete = " -> ".join(f"{row[f'{kind}_complete']:.3f}" for kind in KINDS)
        print(
            f"  {pole:<11} partial {row['before_partial']:.3f} -> {partial}   "
            f"complete {row['before_complete']:.3f} -> {complete}",
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
        "--larger",
        action="store_true",
        help="also time both head kinds on a random-init model of Qwen2.5-0.5B's shape (speed only: heads from "
        "the poles' words, 32 new tokens)",
    )
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
        # the same model and poles with heads that read the candidates' own states (a forward of the k candidates)
        on_candidates = root / "other-last-mean"
        shutil.copytree(other, on_candidates, ignore=shutil.ignore_patterns("heads", "panda_heads.json"))
        result["bootstrap_s"]["other model, last+mean heads"] = time_bootstrap(
            on_candidates, on_candidates, args.pairs, features="last+mean"
        )
        print(f"bootstrap: {result['bootstrap_s']}", flush=True)
        result["speed"] = chat_speed(other, root / "p.db", args.rounds, 64)
        result["speed_last_mean_heads"] = chat_speed(on_candidates, root / "pl.db", args.rounds, 64)
        if args.larger:
            larger = build_other_model(root / "larger", LARGER_SHAPE)
            result["larger_model"] = {"shape": LARGER_SHAPE, "heads": "from words only", "new_tokens": 32}
            result["larger_model"] |= head_kinds_speed(larger, root, args.rounds, 32)
            for kind in (DEFAULT_FEATURES, "last+mean"):
                speed = result["larger_model"][kind]
                print(
                    f"larger model, {kind} heads: {speed['tok_s']}; ratio {speed['ratio']:.2f} "
                    f"(median {speed['ratio_median']:.2f}, load {speed['load_average']})",
                    flush=True,
                )
        result["speed_fewer_candidates"] = [
            chat_speed(other, root / f"p{k}.db", args.rounds, 64, top_k=k) for k in args.fewer_candidates
        ]
        for label, speed in [
            (DEFAULT_FEATURES, result["speed"]),
            ("last+mean", result["speed_last_mean_heads"]),
            *[(DEFAULT_FEATURES, fewer) for fewer in result["speed_fewer_candidates"]],
        ]:
            print(
                f"ChatPanda {label} heads, top_k={speed['top_k']} tok/s: {speed['tok_s']}; ratio "
                f"{speed['ratio']:.2f} (median {speed['ratio_median']:.2f}, load {speed['load_average']}) "
                f"({speed['reward_kinds']})",
                flush=True,
            )
    if not args.skip_accuracy:
        print(
            "partial-answer accuracy on held-out topics, old heads -> token-level heads on the last state -> "
            "on the last state and the answer's mean -> on the prefix state, its mean and the token (the default):",
            flush=True,
        )
        result["accuracy"] = partial_accuracy(args.pairs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
