"""Reward paths compared: decoding speed per reward kind, and how long reward training takes.

    python benchmarks/bench_rewards.py                          # CPU, 1 torch thread (a few minutes)
    python benchmarks/bench_rewards.py --json benchmarks/results/rewards.json

1. Decoding tokens/s (k=10, greedy, prompts of ~40 tokens, 64 new tokens, batch 1 and batch 4) of one random-init
   Llama base model (a byte-level BPE tokenizer trained on local text, so every path decodes real text), steered by:
   - a shared-backbone reward head (one tree-masked forward of k tokens per step);
   - a same-tokenizer reward model on the cached path (one cached prefix, one tree-masked forward of k tokens);
   - the SAME reward model forced onto the text path (``TextRewardModel``: decode, re-tokenise, full forward of
     prompt + response for every candidate): the cost of the cross-tokenizer path with everything else equal, and a
     check that both paths give the same reward wherever the decoded text re-tokenises to the generated ids (random
     weights generate many non-canonical tokenisations, where the text path legitimately reads other tokens);
   - a reward model with another tokenizer (the real cross-tokenizer case, text path);
   - the zero-shot description reward (all-MiniLM-L6-v2 on every candidate text, one encode call per step);
   - no reward (plain top-k argmax), the anchor.
2. Training: a reward head on 2000 preference pairs (features computed once, then Bradley-Terry epochs), again with the
   features cached on disk, and a full sequence-classifier reward model on 200 pairs for one epoch (the paper's
   setting), all on the benchmark's base model.

Random weights: decoding speed does not depend on what the weights say; the training accuracies below are on a
synthetic preference (formal vs casual endings) and only show that the pipeline learns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

from panda_chat.decoding import PandaDecoder
from panda_chat.rewards.base import Calibration
from panda_chat.rewards.data import PreferencePair
from panda_chat.rewards.heads import BaseModelSignature, HeadReward, RewardHead, RewardHeadConfig
from panda_chat.rewards.reward_model import CachedRewardModel
from panda_chat.rewards.text_reward_model import TextRewardModel
from panda_chat.rewards.training import RewardTrainingConfig, train_reward_head, train_reward_model
from panda_chat.rewards.zero_shot import ZeroShotReward
from panda_chat.tiny_models import build_causal_lm, build_reward_model, sample_corpus, train_tokenizer

TOP_K = 10
NEW_TOKENS = int(os.environ.get("PANDA_BENCH_NEW_TOKENS", "64"))  # lower it only for a smoke run of the script
MODEL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
PROMPTS = [
    "Explain, in a few sentences, how a physicist measures quantum tunnelling and why the result matters to us.",
    "Describe how our team builds a bicycle from spare parts, step by step, for a student who has never tried.",
    "Summarise the meeting notes about the budget politely, as the committee formally required last week.",
    "Compare sorting algorithms for beginners, in plain words, with one simple example of each approach.",
]
FORMAL = ["politely.", "formally, as required.", "with great care!", "like an expert would."]
CASUAL = ["with a smile :)", "briefly.", "in plain words.", "for beginners."]


def formality_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    rng = random.Random(seed)
    words = sample_corpus(200, seed=seed)
    pairs = []
    for _ in range(n):
        body = rng.choice(words).rstrip(".!:) ")
        pairs.append(
            PreferencePair(
                prompt=rng.choice(words), chosen=f"{body} {rng.choice(FORMAL)}", rejected=f"{body} {rng.choice(CASUAL)}"
            )
        )
    return pairs


def build_models(root: Path) -> dict[str, Path]:
    tokenizer = train_tokenizer(sample_corpus(3000, seed=0), vocab_size=1024)
    other = train_tokenizer(sample_corpus(3000, seed=1), vocab_size=768)
    return {
        "base": build_causal_lm(root / "base", tokenizer, seed=0, **MODEL),
        "rm": build_reward_model(root / "rm", tokenizer, seed=1, **MODEL),
        "rm_other": build_reward_model(root / "rm_other", other, seed=2, **MODEL),
    }


def decode_speed(decoder: PandaDecoder, reward: str | None, batch: int) -> tuple[float, list]:
    prompts = PROMPTS[:batch]
    kwargs = dict(lam=1.0, weights={reward: 1.0}) if reward else dict(lam=0.0)
    decoder.generate(prompts, max_new_tokens=4, top_k=TOP_K, stop_at_eos=False, **kwargs)  # warm-up
    start = time.perf_counter()
    outs = decoder.generate(prompts, max_new_tokens=NEW_TOKENS, top_k=TOP_K, stop_at_eos=False, **kwargs)
    seconds = time.perf_counter() - start
    return sum(len(o.token_ids) for o in outs) / seconds, outs


def text_path_agreement(text_rm: TextRewardModel, tokenizer, outputs, name: str) -> dict:
    """Re-score the cached path's chosen prefixes on the text path. Where the decoded prefix re-tokenises to the very
    ids that were generated, both paths read the same tokens and must agree; elsewhere they legitimately differ."""
    same_ids, diffs, steps = 0, [], 0
    for prompt, out in zip(PROMPTS, outputs):
        texts = [tokenizer.decode(out.token_ids[: t + 1], skip_special_tokens=True) for t in range(len(out.token_ids))]
        scores = text_rm.score_texts([prompt] * len(texts), texts)
        for t, text in enumerate(texts):
            steps += 1
            if tokenizer(text, add_special_tokens=False)["input_ids"] == out.token_ids[: t + 1]:
                same_ids += 1
                diffs.append(abs(float(scores[t]) - out.raw_rewards[name][t]))
    return {
        "steps": steps,
        "steps_retokenised_identically": same_ids,
        "max_abs_reward_diff_on_those": max(diffs) if diffs else None,
    }


def bench_decoding(paths: dict[str, Path]) -> list[dict]:
    base = AutoModelForCausalLM.from_pretrained(paths["base"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(paths["base"])
    torch.manual_seed(0)
    head = RewardHead(
        RewardHeadConfig(
            name="head",
            hidden_size=base.config.hidden_size,
            base_signature=BaseModelSignature.of(base),
            calibration=Calibration(),
        )
    )
    rm = AutoModelForSequenceClassification.from_pretrained(paths["rm"]).eval()
    rm_other = AutoModelForSequenceClassification.from_pretrained(paths["rm_other"]).eval()
    rewards = {
        "head": HeadReward(head),
        "rm (cached)": CachedRewardModel(rm, name="rm (cached)"),
        "same rm (text path)": TextRewardModel(rm, tokenizer, name="same rm (text path)"),
        "other-tokenizer rm (text path)": TextRewardModel(
            rm_other, AutoTokenizer.from_pretrained(paths["rm_other"]), name="other-tokenizer rm (text path)"
        ),
        "zero-shot (MiniLM)": ZeroShotReward("A formal, polite and careful answer.", name="zero-shot (MiniLM)"),
    }
    decoder = PandaDecoder(base, tokenizer, rewards=rewards)
    rows = []
    agreement = None
    for batch in (1, 4):
        plain, _ = decode_speed(decoder, None, batch)
        outputs = {}
        for name in rewards:
            speed, outputs[name] = decode_speed(decoder, name, batch)
            rows.append({"reward": name, "batch": batch, "tokens_per_s": speed, "vs_plain": speed / plain})
            print(f"  batch {batch}  {name:32s} {speed:8.1f} tok/s", file=sys.stderr)
        rows.append({"reward": "none (plain top-k argmax)", "batch": batch, "tokens_per_s": plain, "vs_plain": 1.0})
        if batch == 4:
            agreement = text_path_agreement(
                rewards["same rm (text path)"], tokenizer, outputs["rm (cached)"], "rm (cached)"
            )
    return rows, agreement


def bench_training(paths: dict[str, Path]) -> list[dict]:
    base = AutoModelForCausalLM.from_pretrained(paths["base"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(paths["base"])
    pairs = formality_pairs(2000)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label in ("head, 2000 pairs (features computed)", "head, 2000 pairs (features from disk cache)"):
            trained = train_reward_head(
                (base, tokenizer),
                pairs,
                name="formal",
                cache_dir=cache,
                config=RewardTrainingConfig(epochs=20, val_split=0.1),
            )
            r = trained.report
            rows.append(
                {
                    "what": label,
                    "seconds": r.seconds,
                    "feature_seconds": r.feature_seconds,
                    "epochs": r.epochs_run,
                    "val_accuracy": r.val_accuracy,
                }
            )
            print(f"  {label}: {r.seconds:.1f}s", file=sys.stderr)
    with tempfile.TemporaryDirectory() as out:
        r = train_reward_model(
            paths["base"],
            pairs[:200],
            out,
            name="formal",
            config=RewardTrainingConfig(epochs=1, lr=1e-4, batch_size=8, val_split=0.1),
        )
    rows.append(
        {
            "what": "full reward model, 200 pairs, 1 epoch",
            "seconds": r.seconds,
            "feature_seconds": None,
            "epochs": r.epochs_run,
            "val_accuracy": r.val_accuracy,
        }
    )
    print(f"  full model: {r.seconds:.1f}s", file=sys.stderr)
    return rows


def print_tables(decoding: list[dict], agreement: dict, training: list[dict]) -> None:
    print(f"\nDecoding, k={TOP_K}, {NEW_TOKENS} new tokens, greedy (tokens/s over all rows)\n")
    print("| reward | batch | tokens/s | vs plain |")
    print("| --- | ---: | ---: | ---: |")
    for r in decoding:
        print(f"| {r['reward']} | {r['batch']} | {r['tokens_per_s']:.1f} | {r['vs_plain']:.2f}x |")
    print(
        f"\nText path vs cached path, same reward model, on the cached path's batch-4 outputs: "
        f"{agreement['steps_retokenised_identically']}/{agreement['steps']} prefixes re-tokenise to the generated "
        f"ids; on those the rewards differ by at most {agreement['max_abs_reward_diff_on_those']:.2e}"
    )
    print("\nReward training on the benchmark base model\n")
    print("| what | seconds | of which features | epochs | val accuracy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in training:
        feats = "" if r["feature_seconds"] is None else f"{r['feature_seconds']:.1f}"
        acc = "n/a" if r["val_accuracy"] is None else f"{r['val_accuracy']:.3f}"
        print(f"| {r['what']} | {r['seconds']:.1f} | {feats} | {r['epochs']} | {acc} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{when}; {machine}; torch threads {torch.get_num_threads()}; base model {MODEL}")
    with tempfile.TemporaryDirectory() as root:
        paths = build_models(Path(root))
        decoding, agreement = bench_decoding(paths)
        training = bench_training(paths)
    print_tables(decoding, agreement, training)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": when,
                    "machine": machine,
                    "model": MODEL,
                    "top_k": TOP_K,
                    "new_tokens": NEW_TOKENS,
                    "decoding": decoding,
                    "text_path_agreement": agreement,
                    "training": training,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
