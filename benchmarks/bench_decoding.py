"""Decoding speed of the PANDA engine against plain greedy decoding and the naive re-encoding loop.

    python benchmarks/bench_decoding.py              # the CPU table (about 5 minutes on 2 free cores)
    python benchmarks/bench_decoding.py --json out.json

In one run, on fixed random-init Llama configs defined below (random weights: the speed of a forward does not depend
on what the weights say), prompts of 64 random tokens and 256 new tokens:

- plain greedy: ``model.generate(do_sample=False)`` of the base model (the anchor every ratio is against);
- PANDA with an external, same-size reward model (k=10): one cached prefix + one tree-masked forward of k tokens;
- PANDA with a shared-backbone reward head (k=10): one tree-masked forward of k tokens through the base model;
- the naive loop (``panda_chat.decoding.reference``) re-encoding prefix+candidate for all k candidates every step,
  with the head and with the RM; it also checks that the fast paths chose the very same tokens;
- a batch of 8 rows (heads) against the same 8 prompts one by one;
- the reward model's peak KV-cache size for several k (it must grow by k slots, not by k prefixes).

With CUDA present, the same rows are measured again for a ~1B-parameter config in bfloat16.

The paths table (``--paths-only`` runs just it) compares the two exact ways of scoring the k candidates
(``panda_chat.tree_attention``): the tree path and the general path (the cache repeated k times for one ordinary step,
logits for all k candidates from the model's own forward), with a reward head, on a Llama, a Gemma-2-style model
(final soft-capping, attention soft-capping, sliding window shorter than prompt+answer on every other layer) and an
ALiBi model (Bloom: the load-time check sends it to the general path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.reference import reference_generate
from panda_chat.rewards.base import Calibration
from panda_chat.rewards.heads import BaseModelSignature, HeadReward, RewardHead, RewardHeadConfig
from panda_chat.rewards.reward_model import CachedRewardModel

PROMPT_TOKENS, TOP_K, BATCH, LAM = 64, 10, 8, 1.0
NEW_TOKENS = int(os.environ.get("PANDA_BENCH_NEW_TOKENS", "256"))  # lower it only for a smoke run of the script


@dataclass(frozen=True)
class BenchConfig:
    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    device: str
    dtype: torch.dtype
    naive_tokens: int  # the naive loop is quadratic: on big models it is timed over fewer new tokens (a lower bound)

    def llama(self, **extra) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=1024,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
            **extra,
        )


CPU_CONFIG = BenchConfig("llama-4L-128d-32k (CPU, float32)", 128, 344, 4, 4, 2, 32000, "cpu", torch.float32, NEW_TOKENS)
# TinyLlama-1.1B's shape: 22 layers, hidden 2048, MLP 5632, 32 heads / 4 KV heads, 32k vocabulary.
GPU_CONFIG = BenchConfig(
    "llama-22L-2048d-32k (1.1B, CUDA, bfloat16)", 2048, 5632, 22, 32, 4, 32000, "cuda", torch.bfloat16, 64
)


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with one word per id, so every random id decodes and the vocabularies match."""
    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="w0", bos_token="w1", eos_token="w2", padding_side="left"
    )


class _RecordingRewardModel(CachedRewardModel):
    """Keeps its last session, to read the cache size after a run."""

    def start(self, prompts):
        self.session = super().start(prompts)
        return self.session


def timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def bench(config: BenchConfig, rounds: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    device = torch.device(config.device)
    tokenizer = word_tokenizer(config.vocab_size)
    base = LlamaForCausalLM(config.llama()).to(device=device, dtype=config.dtype).eval()
    base.generation_config.eos_token_id = None  # random weights: decode all 256 tokens, never stop early
    base.generation_config.pad_token_id = 0
    rm_model = LlamaForSequenceClassification(config.llama(num_labels=1)).to(device=device, dtype=config.dtype).eval()
    head = RewardHead(
        RewardHeadConfig(name="head", hidden_size=config.hidden_size, base_signature=BaseModelSignature.of(base))
    )
    with torch.no_grad():
        head.net.weight.mul_(10.0)  # rewards large enough to change choices (so the equivalence check means something)
    rm = CachedRewardModel(rm_model, name="rm", calibration=Calibration(std=0.05))
    decoder = PandaDecoder(base, tokenizer, rewards={"head": HeadReward(head), "rm": rm})

    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(3, config.vocab_size, (BATCH, PROMPT_TOKENS), generator=generator).tolist()
    one = prompts[0]
    common = dict(lam=LAM, top_k=TOP_K, max_new_tokens=NEW_TOKENS, stop_at_eos=False)

    def plain():
        ids = torch.tensor([one], device=device)
        return base.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS
        )

    def panda(weights, prompts_=None, **kw):
        return lambda: decoder.generate(prompts_ or one, weights=weights, **{**common, **kw})

    # Warm-up (allocator, kernels), short.
    base.generate(input_ids=torch.tensor([one], device=device), do_sample=False, max_new_tokens=8)
    for weights in ({"head": 1.0}, {"rm": 1.0}):
        decoder.generate(one, weights=weights, **{**common, "max_new_tokens": 8})

    # Each measurement is repeated (interleaved, so a burst of load from other processes hits all methods alike) and
    # the fastest run of each is kept: on a shared machine the minimum time is the least noisy estimate.
    best: dict[str, float] = {}
    outputs: dict[str, object] = {}

    def measure(key: str, fn, tokens: int) -> None:
        seconds, outputs[key] = timed(fn)
        best[key] = max(best.get(key, 0.0), tokens / seconds)

    n = min(config.naive_tokens, NEW_TOKENS)
    for _ in range(rounds):
        measure("plain", plain, NEW_TOKENS)
        measure("rm", panda({"rm": 1.0}), NEW_TOKENS)
        measure("head", panda({"head": 1.0}), NEW_TOKENS)
        measure("lam0", panda({"head": 1.0}, lam=0.0), NEW_TOKENS)
        measure("batch8", panda({"head": 1.0}, prompts), BATCH * NEW_TOKENS)
        measure(
            "sequential8",
            lambda: [decoder.generate(p, weights={"head": 1.0}, **common)[0] for p in prompts],
            BATCH * NEW_TOKENS,
        )
    # The naive loop, over the first ``naive_tokens`` new tokens (all of them on CPU; its cost per token only grows with
    # length, so a shorter run overstates its speed and the ratios against it are then lower bounds).
    for _ in range(max(1, rounds - 1)):
        measure("naive_head", lambda: reference_generate(base, one, {"head": head}, {"head": 1.0}, LAM, TOP_K, n), n)
        measure(
            "naive_rm",
            lambda: reference_generate(
                base, one, {"rm": rm_model}, {"rm": 1.0}, LAM, TOP_K, n, calibrations={"rm": rm.calibration}
            ),
            n,
        )
    results = best
    assert outputs["plain"].shape[1] == PROMPT_TOKENS + NEW_TOKENS
    same_head = outputs["head"][0].token_ids[:n] == outputs["naive_head"]
    same_rm = outputs["rm"][0].token_ids[:n] == outputs["naive_rm"]
    steered = outputs["head"][0].token_ids != outputs["plain"][0, PROMPT_TOKENS:].tolist()
    batch_matches = sum(b.token_ids == s.token_ids for b, s in zip(outputs["batch8"], outputs["sequential8"]))

    # Peak RM cache bytes for several k (short runs), and what k copies of the prefix would take.
    peaks = {}
    for k in (2, 10, 20):
        recording = _RecordingRewardModel(rm_model, name="rm_k", calibration=rm.calibration)
        decoder.generate(
            one,
            rewards={"rm_k": recording},
            weights={"rm_k": 1.0},
            lam=LAM,
            top_k=k,
            max_new_tokens=32,
            stop_at_eos=False,
        )
        peaks[k] = recording.session.peak_cache_bytes
    slot = (
        2 * config.num_hidden_layers * config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    )
    slot *= torch.tensor([], dtype=config.dtype).element_size()
    replicated = {k: k * (PROMPT_TOKENS + 31) * slot for k in peaks}

    plain_tps = results["plain"]
    rows = [
        ("plain greedy (HF generate)", results["plain"], 1.0, ""),
        (
            f"PANDA, external same-size RM, k={TOP_K}",
            results["rm"],
            results["rm"] / plain_tps,
            f"{results['rm'] / results['naive_rm']:.1f}x naive RM loop",
        ),
        (
            f"PANDA, reward head, k={TOP_K}",
            results["head"],
            results["head"] / plain_tps,
            f"{results['head'] / results['naive_head']:.1f}x naive head loop",
        ),
        ("PANDA, reward head, lam=0 (plain path)", results["lam0"], results["lam0"] / plain_tps, ""),
        (f"naive loop, head (first {n} tokens)", results["naive_head"], results["naive_head"] / plain_tps, ""),
        (f"naive loop, RM (first {n} tokens)", results["naive_rm"], results["naive_rm"] / plain_tps, ""),
        (
            f"PANDA heads, batch of {BATCH} (total tok/s)",
            results["batch8"],
            results["batch8"] / plain_tps,
            f"{results['batch8'] / results['sequential8']:.2f}x sequential",
        ),
        (f"PANDA heads, same {BATCH} one by one", results["sequential8"], results["sequential8"] / plain_tps, ""),
    ]
    return {
        "config": config.name,
        "params_m": round(sum(p.numel() for p in base.parameters()) / 1e6, 1),
        "tokens_per_s": {key: round(value, 2) for key, value in results.items()},
        "rows": [
            {"method": m, "tokens_per_s": round(t, 2), "x_plain": round(r, 3), "note": note} for m, t, r, note in rows
        ],
        "checks": {
            "head_path_equals_naive_loop": same_head,
            "rm_path_equals_naive_loop": same_rm,
            "reward_changed_tokens_vs_plain": steered,
            "batch_rows_equal_one_by_one": f"{batch_matches}/{BATCH}",
        },
        "rm_cache_peak_bytes": {str(k): v for k, v in peaks.items()},
        "rm_cache_if_replicated_k_times_bytes": {str(k): v for k, v in replicated.items()},
        "targets": {
            "head >= 0.75x plain": results["head"] / plain_tps >= 0.75,
            "external RM >= 0.5x plain": results["rm"] / plain_tps >= 0.5,
            "head >= 15x naive": results["head"] / results["naive_head"] >= 15,
            "external RM >= 10x naive": results["rm"] / results["naive_rm"] >= 10,
            "batch of 8 >= 4x sequential": results["batch8"] / results["sequential8"] >= 4,
            "RM cache peak grows by k slots only": peaks[20] - peaks[2] == 18 * slot,
        },
    }


PATH_NEW_TOKENS = int(os.environ.get("PANDA_BENCH_PATH_NEW_TOKENS", "128"))
PATH_WINDOW = 32  # the Gemma-2-style model's sliding window: shorter than the 64-token prompt


def path_models(config: BenchConfig) -> dict[str, torch.nn.Module]:
    """The three models of the paths table, at the size of ``config``, random-init and seeded."""
    torch.manual_seed(0)
    tokens = {"vocab_size": config.vocab_size, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    gemma2 = Gemma2Config(
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        sliding_window=PATH_WINDOW,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        max_position_embeddings=1024,
        **tokens,
    )
    bloom = BloomConfig(
        hidden_size=config.hidden_size, n_layer=config.num_hidden_layers, n_head=config.num_attention_heads, **tokens
    )
    return {
        "Llama": LlamaForCausalLM(config.llama()),
        f"Gemma-2-style (soft-cap, window {PATH_WINDOW})": Gemma2ForCausalLM(gemma2),
        "Bloom (ALiBi)": BloomForCausalLM(bloom),
    }


def bench_paths(config: BenchConfig, rounds: int) -> dict:
    """tok/s of plain greedy, the tree path and the general path (reward head, k = TOP_K) on each model."""
    device = torch.device(config.device)
    tokenizer = word_tokenizer(config.vocab_size)
    generator = torch.Generator().manual_seed(1)
    one = torch.randint(3, config.vocab_size, (PROMPT_TOKENS,), generator=generator).tolist()
    common = {
        "lam": LAM,
        "top_k": TOP_K,
        "max_new_tokens": PATH_NEW_TOKENS,
        "stop_at_eos": False,
        "weights": {"head": 1.0},
    }
    rows = []
    for name, model in path_models(config).items():
        model = model.to(device=device, dtype=config.dtype).eval()
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        torch.manual_seed(0)
        head = RewardHead(
            RewardHeadConfig(name="head", hidden_size=config.hidden_size, base_signature=BaseModelSignature.of(model))
        )
        with torch.no_grad():
            head.net.weight.mul_(10.0)
        auto = PandaDecoder(model, tokenizer, rewards={"head": HeadReward(head)})
        general = PandaDecoder(model, tokenizer, rewards={"head": HeadReward(head)}, path="general")
        ids = torch.tensor([one], device=device)

        def plain(model=model, ids=ids):
            return model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=PATH_NEW_TOKENS,
                min_new_tokens=PATH_NEW_TOKENS,
            )

        runs = {"plain": plain, "general": lambda decoder=general: decoder.generate(one, **common)}
        if auto.path == "tree":
            runs["tree"] = lambda decoder=auto: decoder.generate(one, **common)
        plain()  # warm-up
        best: dict[str, float] = {}
        outputs: dict[str, object] = {}
        for _ in range(rounds):
            for key, fn in runs.items():
                seconds, outputs[key] = timed(fn)
                best[key] = max(best.get(key, 0.0), PATH_NEW_TOKENS / seconds)
        same = outputs["tree"][0].token_ids == outputs["general"][0].token_ids if "tree" in outputs else None
        rows.append(
            {
                "model": name,
                "auto_path": auto.path,
                "plain_tokens_per_s": round(best["plain"], 2),
                "tree_tokens_per_s": round(best["tree"], 2) if "tree" in best else None,
                "general_tokens_per_s": round(best["general"], 2),
                "tree_x_plain": round(best["tree"] / best["plain"], 3) if "tree" in best else None,
                "general_x_plain": round(best["general"] / best["plain"], 3),
                "tree_equals_general_tokens": same,
            }
        )
    return {"config": config.name, "new_tokens": PATH_NEW_TOKENS, "rows": rows}


def print_paths_table(result: dict) -> None:
    print(
        f"\n### Tree vs general path, {result['config']} shape; reward head, k={TOP_K}; prompt {PROMPT_TOKENS}, "
        f"{result['new_tokens']} new\n"
    )
    print(
        "| model | path chosen | plain greedy tok/s | tree path tok/s (x plain) | general path tok/s (x plain) "
        "| same tokens |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for row in result["rows"]:
        tree = (
            f"{row['tree_tokens_per_s']:.1f} ({row['tree_x_plain']:.2f})"
            if row["tree_tokens_per_s"]
            else "n/a (not exact: refused)"
        )
        same = {True: "yes", False: "NO", None: "-"}[row["tree_equals_general_tokens"]]
        print(
            f"| {row['model']} | {row['auto_path']} | {row['plain_tokens_per_s']:.1f} | {tree} | "
            f"{row['general_tokens_per_s']:.1f} ({row['general_x_plain']:.2f}) | {same} |"
        )


def print_table(result: dict) -> None:
    print(f"\n### {result['config']}, {result['params_m']}M parameters; prompt {PROMPT_TOKENS}, {NEW_TOKENS} new\n")
    print("| method | tokens/s | x plain greedy | note |")
    print("| --- | ---: | ---: | --- |")
    for row in result["rows"]:
        print(f"| {row['method']} | {row['tokens_per_s']:.1f} | {row['x_plain']:.2f} | {row['note']} |")
    peaks = result["rm_cache_peak_bytes"]
    replicated = result["rm_cache_if_replicated_k_times_bytes"]
    print(
        "\nRM KV-cache peak (32 new tokens): "
        + ", ".join(
            f"k={k}: {int(v) / 1024:.0f} KiB (k copies: {int(replicated[k]) / 1024:.0f} KiB)" for k, v in peaks.items()
        )
    )
    print("checks: " + ", ".join(f"{k}={v}" for k, v in result["checks"].items()))
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in result["targets"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--skip-gpu", action="store_true", help="only the CPU table, even with CUDA present")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement (best kept)")
    parser.add_argument("--paths-only", action="store_true", help="only the tree-vs-general path table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{when}; {machine}; torch threads {torch.get_num_threads()}; best of {args.rounds} rounds")
    results = {
        "date": when,
        "machine": machine,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "tables": [],
        "paths": [],
    }
    configs = [CPU_CONFIG] + ([GPU_CONFIG] if torch.cuda.is_available() and not args.skip_gpu else [])
    for config in configs:
        if not args.paths_only:
            result = bench(config, rounds=args.rounds)
            print_table(result)
            results["tables"].append(result)
        paths = bench_paths(config, rounds=args.rounds)
        print_paths_table(paths)
        results["paths"].append(paths)
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
