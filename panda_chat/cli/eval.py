"""``panda-chat eval``: compare decoding methods on a prompt set and print the method x metric table.

    panda-chat eval --base ./base --reward formal=./formal.safetensors --prompts prompts.txt \\
        --methods greedy,args,panda,panda-set --lambda-model lam.safetensors --json-out eval.json

Its options and its decoder loading are shared with ``lambda fit`` (``options.prompt_set_options``,
``model_loading.load_decoder``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from panda_chat.cli.errors import friendly_errors
from panda_chat.cli.model_loading import load_decoder
from panda_chat.cli.options import (
    force_option,
    json_option,
    parse_floats,
    parse_rewards,
    parse_weights,
    prompt_set_options,
)
from panda_chat.output_paths import check_output, write_text


@click.command("eval")
@prompt_set_options
@click.option(
    "--methods",
    default="greedy,args,panda-set",
    show_default=True,
    help="Comma-separated: greedy, args, panda (needs --lambda-model), panda-set.",
)
@click.option(
    "--lam-grid", default="0.5,1,2,4", show_default=True, help="Constant lambdas for ARGS and the PANDA candidate set."
)
@click.option(
    "--lambda-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A learned lambda file from `panda-chat lambda fit` (method panda).",
)
@click.option("--no-coherence", is_flag=True, help="Skip coherence (no sentence embedder needed).")
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full report (metrics and every response) here; an existing file needs --force.",
)
@force_option
@json_option("Print the report as one JSON object instead of the table.")
@friendly_errors
def eval_command(
    base,
    rewards,
    weights,
    prompts_path,
    no_chat_template,
    beta,
    gamma,
    max_new_tokens,
    top_k,
    max_rows,
    embedder,
    device,
    threads,
    dtype,
    methods,
    lam_grid,
    lambda_model,
    no_coherence,
    json_out,
    force,
    as_json,
) -> None:
    """Decode a prompt set with several methods and print rep-2/3/4, diversity, coherence, avg reward and J."""
    from panda_chat.evaluation.objective import SelectionObjective
    from panda_chat.evaluation.prompts import load_prompts
    from panda_chat.evaluation.runner import evaluate
    from panda_chat.lam.learned import LearnedLambda

    if json_out is not None:
        check_output(json_out, force=force)  # refuse before decoding, not after
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    grid = parse_floats("--lam-grid", lam_grid)
    prompt_set = load_prompts(prompts_path)
    decoder = load_decoder(base, parse_rewards(rewards, embedder), device, dtype, threads)
    report = evaluate(
        decoder,
        prompt_set.prompts,
        method_list,
        lam_grid=grid,
        lambda_model=LearnedLambda.load(lambda_model) if lambda_model else None,
        objective=SelectionObjective(beta=beta, gamma=gamma),
        weights=prompt_set.weights or parse_weights(weights),
        preference_features=prompt_set.preference_features,
        embedder=embedder,
        with_coherence=not no_coherence,
        chat_template=not no_chat_template,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        max_rows=max_rows,
        progress=not as_json and sys.stderr.isatty(),
    )
    payload = report.model_dump(mode="json")
    if json_out is not None:
        write_text(json_out, json.dumps(payload, indent=2), force=force)
    if as_json:
        click.echo(json.dumps(payload | {"json_out": str(json_out) if json_out else None}))
        return
    click.echo(report.markdown())
    click.echo(
        f"\n{report.prompts} prompts, {report.max_new_tokens} new tokens, top-k {report.top_k}, "
        f"beta {report.beta:g}, gamma {report.gamma:g}; {report.seconds:.1f}s"
    )
    if json_out is not None:
        click.echo(f"report: {json_out}")
