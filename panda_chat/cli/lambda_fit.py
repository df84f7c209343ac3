"""``panda-chat lambda fit``: fit the learned context-aware lambda(x, t) on a prompt set.

    panda-chat lambda fit --base ./base --reward formal=./formal.safetensors --prompts train_prompts.txt \\
        --starts 0,0.5,1,2,4 --decays 1,0.95,0.9 --out lam.safetensors

For each prompt, every schedule lambda(t) = start * decay**t of the grid is decoded (rows of shared batches) and
scored by J = reward gain - beta * fluency loss; the model learns each prompt's best schedule.
"""

from __future__ import annotations

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
from panda_chat.output_paths import atomic_file, check_output


@click.group("lambda")
def lambda_group() -> None:
    """Fit the learned, context-aware lambda."""


@lambda_group.command("fit")
@prompt_set_options
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the lambda model (.safetensors); an existing file needs --force.",
)
@force_option
@click.option("--starts", default="0,0.5,1,2,4", show_default=True, help="Schedule starting lambdas.")
@click.option("--decays", default="1,0.95,0.9", show_default=True, help="Per-step decays (1 = constant).")
@click.option("--kind", type=click.Choice(["ridge", "mlp"]), default="ridge", show_default=True)
@click.option("--ridge-alpha", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--no-measure", is_flag=True, help="Skip decoding the prompts with the fitted model afterwards.")
@json_option("Print the fit report as one JSON object.")
@friendly_errors
def fit(
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
    out,
    force,
    starts,
    decays,
    kind,
    ridge_alpha,
    no_measure,
    as_json,
) -> None:
    """Decode a grid of lambda schedules per prompt, keep each prompt's best by J, fit lambda(x, t) to it."""
    from panda_chat.evaluation.lambda_fitting import fit_lambda
    from panda_chat.evaluation.objective import SelectionObjective
    from panda_chat.evaluation.prompts import load_prompts
    from panda_chat.lam.schedules import schedule_grid
    from panda_chat.prompt_format import question_prompt

    check_output(out, force=force)  # refuse before decoding the grid, not after
    decay_values = parse_floats("--decays", decays)
    if any(not 0 < d <= 1 for d in decay_values):
        raise click.BadParameter("decays must be in (0, 1]", param_hint="--decays")
    grid = schedule_grid(parse_floats("--starts", starts), decay_values)
    prompt_set = load_prompts(prompts_path)
    decoder = load_decoder(base, parse_rewards(rewards, embedder), device, dtype, threads)
    texts = (
        prompt_set.prompts if no_chat_template else [question_prompt(decoder.tokenizer, p) for p in prompt_set.prompts]
    )
    model, report = fit_lambda(
        decoder,
        texts,
        grid,
        max_new_tokens=max_new_tokens,
        objective=SelectionObjective(beta=beta, gamma=gamma),
        weights=prompt_set.weights or parse_weights(weights),
        preference_features=prompt_set.preference_features,
        kind=kind,
        ridge_alpha=ridge_alpha,
        max_rows=max_rows,
        measure=not no_measure,
        progress=not as_json and sys.stderr.isatty(),
        top_k=top_k,
    )
    with atomic_file(out, force=force) as temporary:
        model.save(temporary)
    report.out = str(out)
    if as_json:
        click.echo(report.model_dump_json())
        return
    click.echo(
        f"fitted a {kind} lambda on {report.prompts} prompts x {len(report.grid)} schedules in {report.seconds:.1f}s"
    )
    click.echo("mean J per schedule: " + ", ".join(f"{k}={v:.3f}" for k, v in report.mean_value.items()))
    click.echo(
        f"best fixed schedule: {report.best_fixed} (mean J {report.best_fixed_value:.3f}); "
        f"per-prompt oracle: {report.oracle_value:.3f}"
    )
    if report.learned_value is not None:
        click.echo(f"learned lambda, decoding the same prompts: mean J {report.learned_value:.3f}")
    click.echo(f"saved: {report.out}")
