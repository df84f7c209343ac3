"""``panda-chat generate``: decode one prompt with PANDA from the command line, over ``PandaDecoder``.

    panda-chat generate "Explain photosynthesis" --base ./base --reward simple=./simple.safetensors \\
        --weight simple=1 --lam 1.5 --top-k 10 --max-new-tokens 128

The prompt is a user message: it is wrapped in the model's chat template (as ``ChatPanda`` wraps one), unless
``--raw`` asks for plain-text continuation. A model with no chat template gets the plain text, with a note on stderr
saying so. A reward is a head file, a reward-model folder, or ``NAME=zero-shot:DESCRIPTION`` (the slow text reward
over a description, in words).

The prompt comes from the argument, or from stdin when the argument is missing or "-". Text output streams the
answer as it is decoded; ``--json`` prints one JSON object with the text, token ids, per-token rewards and lambdas,
the finish reason, token counts and timing.
"""

from __future__ import annotations

import json
import sys
import time

import click

from panda_chat.cli.errors import friendly_errors
from panda_chat.cli.options import (
    base_option,
    device_option,
    dtype_option,
    embedder_option,
    json_option,
    parse_assignments,
    parse_rewards,
    parse_weights,
    reward_option,
    top_k_option,
    weight_option,
)


@click.command("generate")
@click.argument("prompt", required=False)
@base_option
@reward_option
@weight_option
@click.option("--lam", type=float, default=1.0, show_default=True, help="lambda: how strongly the rewards steer.")
@top_k_option
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--greedy/--sample", default=True, show_default=True, help="Argmax, or sample from the candidates.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature.")
@click.option("--seed", type=int, default=None, help="Seed for --sample (reproducible draws).")
@click.option("--stop", "stop", multiple=True, help="Stop when this text is generated (not printed). Repeatable.")
@click.option("--ignore-eos", is_flag=True, help="Keep decoding past the end-of-sequence token.")
@device_option
@dtype_option
@click.option("--raw", is_flag=True, help="Feed the prompt as plain text (no chat template): continue it.")
@embedder_option
@json_option("Print one JSON object (ids, rewards, timing) instead of text.")
@friendly_errors
def generate(
    prompt,
    base,
    rewards,
    weights,
    lam,
    top_k,
    max_new_tokens,
    greedy,
    temperature,
    seed,
    stop,
    ignore_eos,
    device,
    dtype,
    raw,
    embedder,
    as_json,
) -> None:
    """Generate an answer to PROMPT, steered token by token toward the given rewards (PANDA)."""
    from panda_chat.decoding import DecodingOptions, PandaDecoder  # imported here: `panda-chat --help` stays fast
    from panda_chat.prompt_format import question_prompt

    if prompt is None or prompt == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give a PROMPT argument or pipe the prompt on stdin")
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise click.UsageError("the prompt is empty")
    sources = parse_rewards(rewards, embedder, required=False)
    weight_values = parse_weights(weights)

    started = time.perf_counter()
    decoder = PandaDecoder.from_pretrained(base, rewards=sources, device=device, dtype=dtype)
    load_s = time.perf_counter() - started
    fed = prompt if raw else question_prompt(decoder.tokenizer, prompt)
    if not raw and fed == prompt:  # question_prompt's fallback: said, never silent
        click.echo(f"note: {base} has no chat template, so the prompt is fed as plain text (as with --raw)", err=True)

    def print_piece(row: int, piece: str) -> None:
        click.echo(piece, nl=False)

    options = DecodingOptions(
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        seed=seed,
        stop_at_eos=not ignore_eos,
        stop=tuple(stop),
    )
    (output,) = decoder.generate(
        fed,
        weights=weight_values,
        lam=lam,
        options=options,
        on_token=None if as_json else print_piece,
    )
    if not as_json:
        click.echo()
        return
    result = output.to_dict()
    result["prompt"] = prompt
    result["timing"] = {
        "load_s": round(load_s, 4),
        "generate_s": round(output.elapsed_s, 4),
        "tokens_per_s": round(output.completion_tokens / output.elapsed_s, 2) if output.elapsed_s > 0 else None,
    }
    result["settings"] = {
        "base": str(base),
        "rewards": parse_assignments("--reward", rewards),
        "weights": weight_values,
        "chat_template": fed != prompt,
        "lam": lam,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "greedy": greedy,
        "temperature": temperature,
        "seed": seed,
        "stop": list(stop),
        "device": str(decoder.device),
        "dtype": str(decoder.model.dtype).replace("torch.", ""),
    }
    click.echo(json.dumps(result, ensure_ascii=False))
