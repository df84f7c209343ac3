"""The seed paper's Table 2, Figure 3 and Figure 5, measured on the embedded demo models.

    python -m panda_chat.demo.recipe.table2 --out benchmarks/results [--prompts 32] [--seed 0] [--no-curves]

For each preference (pole) of the catalog, on held-out generated prompts (topics the demo models never saw in
training), the methods of ``panda-chat eval`` (``panda_chat.evaluation.runner.evaluate``, the function the command
runs) are compared: unaligned greedy decoding, ARGS (the best constant lambda of a grid, chosen on these very prompts:
the most favourable choice for the baseline, as the paper reports each method at its best) and PANDA (the shipped
learned lambda). Each user of a row wants one pole fully (weight +1 on its head, -1 on the opposite pole's, exactly
what ChatPanda gives a profile with that preference at confidence 1); the preference vector says the same.

Besides the table, one wide grid of constant lambdas per pole gives the curves: reward vs lambda, and reward vs
diversity (the paper's trade-off), and the largest lambda's answers are kept as the failure case (Figure 5).
Figure 3 compares the context-aware lambda with the best fixed one per pole. ``--no-curves`` skips the wide grid
(more than half the decoding time) and with it the curves and Figure 5.

Outputs: ``table2.md`` (tables and examples), ``table2.json`` (every number and response),
``table2_reward_vs_lambda.png``,
``table2_reward_vs_diversity.png``, ``table2_context_vs_fixed.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from panda_chat.decoding import PandaDecoder
from panda_chat.demo.corpus import POLES, DialogueCorpus, dimension_of, opposite_pole
from panda_chat.demo.models import demo_head_paths, demo_lambda_path, demo_model_dir
from panda_chat.demo.recipe.lambda_stage import SyntheticUser
from panda_chat.evaluation.candidate_set import decode_lambda_grid
from panda_chat.evaluation.objective import SelectionObjective
from panda_chat.evaluation.runner import evaluate
from panda_chat.lam.learned import LearnedLambda
from panda_chat.metrics import generation_metrics
from panda_chat.prompt_format import question_prompt
from profiles.catalog import PreferenceCatalog

_COMMAND = "python -m panda_chat.demo.recipe.table2"
ARGS_GRID = (0.5, 1.0, 2.0, 4.0, 8.0)
CURVE_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def user_for(pole: str) -> SyntheticUser:
    """A user who wants ``pole`` with confidence 1 and has no preference on the other dimensions."""
    dimension = dimension_of(pole)
    return SyntheticUser(
        poles={
            d: (pole if d == dimension else p)
            for d, p in (("expertise", "elementary"), ("verbosity", "concise"), ("tone", "friendly"))
        },
        confidence={d: (1.0 if d == dimension else 0.0) for d in ("expertise", "verbosity", "tone")},
    )


def run_pole(
    decoder: PandaDecoder,
    pole: str,
    questions: list[str],
    lam_model: LearnedLambda,
    embedder,
    max_new_tokens: int,
    progress: bool,
    curves: bool = True,
) -> dict:
    user = user_for(pole)
    weights = user.steering()
    features = torch.tensor([user.vector(PreferenceCatalog.default())] * len(questions), dtype=torch.float32)
    report = evaluate(
        decoder,
        questions,
        ("greedy", "args", "panda"),
        lam_grid=ARGS_GRID,
        lambda_model=lam_model,
        objective=SelectionObjective(),
        weights=weights,
        preference_features=features,
        embedder=embedder,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    if not curves:
        return {"pole": pole, "weights": weights, "eval": report.model_dump(mode="json")}
    # the curves: one wide grid of constant lambdas (row 0 of each prompt is the unguided answer)
    grids = decode_lambda_grid(
        decoder,
        [question_prompt(decoder.tokenizer, q) for q in questions],
        list(CURVE_GRID),
        weights=weights,
        preference_features=features,
        max_new_tokens=max_new_tokens,
        top_k=10,
        greedy=True,
    )
    curve = []
    for j, lam in enumerate((0.0, *CURVE_GRID)):
        outs = [g.unguided if j == 0 else g.outputs[j - 1] for g in grids]
        scores = [g.unguided_score if j == 0 else g.scores[j - 1] for g in grids]
        metrics = generation_metrics(
            questions, [o.text for o in outs], [s.reward for s in scores], with_coherence=False
        )
        curve.append(
            {
                "lam": lam,
                "avg_reward": metrics.avg_reward,
                "diversity": metrics.diversity,
                "rep_2": metrics.rep_2,
                "rep_4": metrics.rep_4,
                "mean_objective": 0.0 if j == 0 else sum(g.values[j - 1] for g in grids) / len(grids),
            }
        )
    worst = max(CURVE_GRID)
    failure = [
        {"prompt": q, "unguided": g.unguided.text, "steered": g.outputs[-1].text}
        for q, g in zip(questions[:3], grids[:3])
    ]
    return {
        "pole": pole,
        "weights": weights,
        "eval": report.model_dump(mode="json"),
        "curve": curve,
        "failure_lambda": worst,
        "failure_examples": failure,
    }


def _method(result: dict, name: str) -> dict:
    return next(r for r in result["eval"]["results"] if r["method"] == name)


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Table 2 on the embedded demo models",
        "",
        (
            f"{meta['prompts']} held-out prompts per preference (topics never seen in training), greedy decoding, "
            "top-k "
            f"{meta['top_k']}, up to {meta['max_new_tokens']} new tokens; reward = the preference's calibrated head "
            "score (weight +1) plus the opposite pole's (weight -1), read at the complete response's last token. "
            "ARGS is the best constant lambda of "
            f"{{{', '.join(f'{v:g}' for v in ARGS_GRID)}}} chosen on these prompts by J = reward gain - fluency loss. "
            f"Coherence: cosine similarity of prompt and response embeddings. Measured in {meta['seconds']:.0f} s on "
            f"CPU ({meta.get('threads', 2)} torch threads) by `{meta.get('command', _COMMAND)}` "
            "(the same `evaluate` that `panda-chat eval` runs)."
        ),
        "",
        f"Machine: {meta.get('machine', 'n/a')}; `uptime` at the start: {meta.get('uptime_start', 'n/a')}; "
        f"at the end: {meta.get('uptime_end', 'n/a')}. Lambda: {meta.get('lambda', 'n/a')}.",
        "",
        "| preference | method | lambda | rep-2 | rep-3 | rep-4 | diversity | coherence | avg reward | J |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for res in results:
        for r in res["eval"]["results"]:
            m = r["metrics"]
            coh = "n/a" if m["coherence"] is None else f"{m['coherence']:.3f}"
            lines.append(
                f"| {res['pole']} | {r['method']} | {r['lam']} | {m['rep_2']:.2f} | {m['rep_3']:.2f} | "
                f"{m['rep_4']:.2f} | {m['diversity']:.3f} | {coh} | {m['avg_reward']:.3f} | "
                f"{r['mean_objective']:.3f} |"
            )
    lines += [
        "",
        "## Figure 3: context-aware vs fixed lambda (mean J and reward on the same prompts)",
        "",
        "| preference | ARGS lambda | ARGS reward | PANDA reward | ARGS J | PANDA J |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for res in results:
        a, p = _method(res, "args"), _method(res, "panda")
        lines.append(
            f"| {res['pole']} | {a['lam']} | {a['metrics']['avg_reward']:.3f} | "
            f"{p['metrics']['avg_reward']:.3f} | {a['mean_objective']:.3f} | {p['mean_objective']:.3f} |"
        )
    wins = sum(_method(r, "panda")["mean_objective"] >= _method(r, "args")["mean_objective"] for r in results)
    lines += ["", f"PANDA's J at least matches ARGS's best constant on {wins} of {len(results)} preferences."]
    if "curve" not in results[0]:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Reward and diversity vs a constant lambda",
        "",
        "| preference | " + " | ".join(f"lambda {c['lam']:g}" for c in results[0]["curve"]) + " |",
        "| --- | " + " | ".join("---:" for _ in results[0]["curve"]) + " |",
    ]
    for res in results:
        lines.append(
            f"| {res['pole']} | "
            + " | ".join(f"{c['avg_reward']:.2f} / {c['diversity']:.2f}" for c in res["curve"])
            + " |"
        )
    lines += [
        "",
        "(each cell: avg reward / diversity)",
        "",
        f"## Figure 5: too large a lambda (lambda = {results[0]['failure_lambda']:g})",
        "",
    ]
    for res in results:
        example = res["failure_examples"][0]
        lines += [
            f"**{res['pole']}**, prompt: {example['prompt']}",
            "",
            f"- unguided: {example['unguided']}",
            f"- lambda {res['failure_lambda']:g}: {example['steered']}",
            "",
        ]
    return "\n".join(lines) + "\n"


def plots(results: list[dict], out: Path) -> list[Path]:
    paths: list[Path] = []
    if "curve" not in results[0]:
        return paths
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for res in results:
        xs = [c["lam"] for c in res["curve"]]
        ax.plot([max(x, 0.125) for x in xs], [c["avg_reward"] for c in res["curve"]], marker="o", label=res["pole"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("constant lambda (lambda 0 drawn at 1/8)")
    ax.set_ylabel("average reward")
    ax.set_title("Reward vs lambda (held-out prompts)")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "table2_reward_vs_lambda.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for res in results:
        line = ax.plot(
            [c["diversity"] for c in res["curve"]],
            [c["avg_reward"] for c in res["curve"]],
            marker="o",
            label=res["pole"],
        )
        for name, marker in (("args", "s"), ("panda", "*")):
            m = _method(res, name)["metrics"]
            ax.scatter(
                [m["diversity"]],
                [m["avg_reward"]],
                marker=marker,
                s=110,
                color=line[0].get_color(),
                edgecolors="black",
                zorder=3,
            )
    ax.set_xlabel("diversity")
    ax.set_ylabel("average reward")
    ax.set_title("Reward vs diversity: constant-lambda curve; square = ARGS, star = PANDA")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "table2_reward_vs_diversity.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    poles = [r["pole"] for r in results]
    xs = list(range(len(poles)))
    for offset, name, label in (
        (-0.2, "args", "fixed lambda (ARGS, best of grid)"),
        (0.2, "panda", "context-aware lambda (PANDA)"),
    ):
        ax.bar([x + offset for x in xs], [_method(r, name)["mean_objective"] for r in results], width=0.4, label=label)
    ax.set_xticks(list(xs), poles)
    ax.set_ylabel("mean J (reward gain - fluency loss)")
    ax.set_title("Context-aware vs fixed lambda")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "table2_context_vs_fixed.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m panda_chat.demo.recipe.table2", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--poles", default=",".join(POLES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embedder", default=None, help="coherence embedder (default all-MiniLM-L6-v2)")
    parser.add_argument("--no-curves", action="store_true", help="skip the wide constant-lambda grid (curves, Fig. 5)")
    parser.add_argument("--lambda-file", default=None, help="learned lambda to evaluate (default: the shipped one)")
    args = parser.parse_args(argv)
    import platform
    import subprocess
    import sys

    def uptime() -> str:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    uptime_start = uptime()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from profiles.embedders import resolve_embedder

    embedder = resolve_embedder(args.embedder)
    heads = demo_head_paths()
    decoder = PandaDecoder.from_pretrained(
        str(demo_model_dir()), rewards={p: str(h) for p, h in heads.items()}, device="cpu", dtype="float32"
    )
    lam_path = Path(args.lambda_file) if args.lambda_file else demo_lambda_path()
    lam_model = LearnedLambda.load(lam_path)
    questions = DialogueCorpus(args.seed).prompts(args.prompts, split="heldout")
    results = []
    for pole in [p.strip() for p in args.poles.split(",") if p.strip()]:
        print(f"[table2] {pole} (vs {opposite_pole(pole)})", flush=True)
        results.append(
            run_pole(
                decoder,
                pole,
                questions,
                lam_model,
                embedder,
                args.max_new_tokens,
                progress=True,
                curves=not args.no_curves,
            )
        )
    meta = {
        "prompts": len(questions),
        "seed": args.seed,
        "top_k": 10,
        "max_new_tokens": args.max_new_tokens,
        "args_grid": list(ARGS_GRID),
        "curve_grid": list(CURVE_GRID),
        "threads": args.threads,
        "seconds": time.perf_counter() - started,
        "command": " ".join(["python -m panda_chat.demo.recipe.table2", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "uptime_start": uptime_start,
        "uptime_end": uptime(),
        "lambda": f"{lam_path.name} ({lam_model.label()}, fitted with "
        f"{ {k: lam_model.config.training.get(k) for k in ('target', 'value_alpha', 'prompts', 'ridge_alpha')} })",
    }
    (out / "table2.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    (out / "table2.md").write_text(markdown(results, meta), encoding="utf-8")
    for path in plots(results, out):
        print(f"[table2] wrote {path}")
    print(f"[table2] wrote {out / 'table2.md'} and {out / 'table2.json'} in {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
