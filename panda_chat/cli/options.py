"""The options several commands share: declared once here (``--db``, ``--embedder``, ``--catalog``, ``--model`` and
``--base``, ``--device``, ``--dtype``, ``--threads``, ``--reward``, ``--weight``, ``--top-k``, ``--force``, ``--json``)
and parsed once here (``parse_*``: ``NAME=VALUE`` pairs, rewards, weights, number lists).

One place, so every command spells, documents and reads them (environment variables included) the same way, and
``generate``, ``eval`` and ``lambda fit`` accept and reject the same things with the same messages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:  # the rewards package loads only when a command runs, never for --help
    from panda_chat.rewards.loading import RewardOrPath

F = TypeVar("F", bound=Callable)

ZERO_SHOT_PREFIX = "zero-shot:"
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Shared option decorators: each application makes a fresh click.Option, so one decorator serves every command.
# The ones that name a resource (database, embedder, catalog, model, device, dtype, threads) read an environment
# variable, the same one in every command, and --help shows it.
db_option = click.option(
    "--db",
    envvar="PANDA_CHAT_DB",
    show_envvar=True,
    metavar="URL",
    show_default="the user data directory",
    help="Profile database: a SQLAlchemy URL or a SQLite file.",
)
embedder_option = click.option(
    "--embedder",
    envvar="PANDA_CHAT_EMBEDDER",
    show_envvar=True,
    metavar="MODEL",
    show_default="all-MiniLM-L6-v2",
    help="Sentence embedder (profile store, zero-shot rewards, coherence): a sentence-transformers path, or "
    "'hashing' (fast, for tests).",
)
catalog_option = click.option(
    "--catalog",
    envvar="PANDA_CHAT_CATALOG",
    show_envvar=True,
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="Preference catalog file (TOML or YAML) adding dimensions and poles.",
)
device_option = click.option(
    "--device",
    envvar="PANDA_CHAT_DEVICE",
    metavar="DEVICE",
    show_envvar=True,
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:1, ... or auto.",
)
dtype_option = click.option(
    "--dtype",
    envvar="PANDA_CHAT_DTYPE",
    show_envvar=True,
    type=click.Choice(DTYPES),
    default="auto",
    show_default=True,
    help="Weights' dtype (auto: the model's own, float32 on CPU).",
)
threads_option = click.option(
    "--threads",
    envvar="PANDA_CHAT_THREADS",
    show_envvar=True,
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads (default: torch's choice; 1 is fastest on a busy shared machine).",
)
# The base causal LM: `--model` where the embedded demo model is the default (chat, serve), `--base` where a command
# builds or measures something for one given model (generate, eval, lambda fit, reward). Both read PANDA_CHAT_MODEL,
# so heads, lambdas and evaluations are made for the model that chat and serve use.
_MODEL_ENV = "PANDA_CHAT_MODEL"
model_option = click.option(
    "--model",
    envvar=_MODEL_ENV,
    show_envvar=True,
    metavar="DIR",
    show_default="the embedded demo model",
    help="Base chat model: a local folder, or a hub id when online.",
)
base_option = click.option(
    "--base",
    envvar=_MODEL_ENV,
    show_envvar=True,
    metavar="DIR",
    required=True,
    help="Base causal LM: a local folder, or a hub id when online.",
)
reward_option = click.option(
    "--reward",
    "rewards",
    multiple=True,
    metavar="NAME=PATH",
    help="A reward: a head file (.safetensors), a reward-model folder, or zero-shot:DESCRIPTION. Repeatable.",
)
weight_option = click.option(
    "--weight",
    "weights",
    multiple=True,
    metavar="NAME=W",
    help="Weight of a reward (default: 1 for every reward; once any is given, a reward without one gets 0).",
)
top_k_option = click.option(
    "--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="Candidates re-scored per step."
)
force_option = click.option("--force", is_flag=True, help="Replace an existing output file or non-empty output folder.")


def json_option(help: str = "Print JSON instead of text.") -> Callable[[F], F]:
    """``--json``: machine-readable output (what it prints differs per command, so each may say it)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def prompt_set_options(command: F) -> F:
    """The options of the commands that decode a prompt set with rewards (``eval``, ``lambda fit``)."""
    options = [
        base_option,
        reward_option,
        weight_option,
        click.option(
            "--prompts",
            "prompts_path",
            required=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="Prompts: one per line, or JSONL {prompt, weights?, preference_features?}; a prompt's weights win "
            "over --weight.",
        ),
        click.option("--no-chat-template", is_flag=True, help="Feed prompts as raw text, not as a chat user turn."),
        click.option(
            "--beta",
            type=click.FloatRange(min=0),
            default=1.0,
            show_default=True,
            help="Weight of the fluency loss in J = reward gain - beta * fluency loss.",
        ),
        click.option(
            "--gamma",
            type=click.FloatRange(min=0),
            default=1.0,
            show_default=True,
            help="Weight of degeneration (repeated n-grams) inside the fluency loss.",
        ),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True),
        top_k_option,
        click.option(
            "--max-rows",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Rows per decoding batch (prompts x lambdas).",
        ),
        embedder_option,
        device_option,
        threads_option,
        dtype_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def parse_assignments(option: str, values: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE options -> {name: value}."""
    parsed = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got '{item}'", param_hint=option)
        if name.strip() in parsed:
            raise click.BadParameter(f"'{name.strip()}' is given twice: give each name once", param_hint=option)
        parsed[name.strip()] = value.strip()
    return parsed


def parse_floats(option: str, text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got '{text}'", param_hint=option) from None
    if not values or any(v < 0 for v in values):
        raise click.BadParameter(f"expected non-negative numbers, got '{text}'", param_hint=option)
    return values


def parse_rewards(
    values: tuple[str, ...], embedder: str | None = None, required: bool = True
) -> dict[str, RewardOrPath]:
    """``--reward NAME=PATH`` (head file or reward-model folder) or ``NAME=zero-shot:DESCRIPTION``, the one parser
    of ``generate``, ``eval`` and ``lambda fit``; ``required``: at least one reward must be given."""
    specs: dict[str, RewardOrPath] = {}
    for name, value in parse_assignments("--reward", values).items():
        if value.startswith(ZERO_SHOT_PREFIX):
            from panda_chat.rewards.zero_shot import ZeroShotReward

            specs[name] = ZeroShotReward(value[len(ZERO_SHOT_PREFIX) :].strip(), name=name, embedder=embedder)
        else:
            specs[name] = value
    if required and not specs:
        raise click.UsageError("give at least one --reward NAME=PATH")
    return specs


def parse_weights(values: tuple[str, ...]) -> dict[str, float] | None:
    """``--weight NAME=W`` -> {name: weight}; None when none is given (every reward then weighs 1)."""
    if not values:
        return None
    weights = {}
    for name, value in parse_assignments("--weight", values).items():
        try:
            weights[name] = float(value)
        except ValueError:
            raise click.BadParameter(
                f"weight of '{name}' must be a number, got '{value}'", param_hint="--weight"
            ) from None
    return weights


def user_id_callback(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """A click callback checking a user id (``--user`` or a USER argument) with ``profiles.ids``, so a command
    refuses an id it could never address again before it opens anything."""
    from profiles import InvalidUserIdError, validate_user_id

    if value is None:
        return None
    try:
        return validate_user_id(value, where="the user id")
    except InvalidUserIdError as error:
        raise click.BadParameter(str(error), ctx=context, param=parameter) from None
