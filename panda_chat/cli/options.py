"""The options several commands share: declared once here (``--device``, ``--dtype``, ``--db``, ``--embedder``) and
parsed once here (``NAME=VALUE`` pairs, rewards, weights, number lists).

One place, so every command spells, documents and reads them (environment variables included) the same way, and
``generate``, ``eval`` and ``lambda fit`` accept and reject the same things with the same messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the rewards package loads only when a command runs, never for --help
    from panda_chat.rewards.loading import RewardSpec

ZERO_SHOT_PREFIX = "zero-shot:"
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Shared option decorators: each application makes a fresh click.Option, so one decorator serves every command.
device_option = click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... or auto.")
dtype_option = click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="auto",
    show_default=True,
    help="Weights' dtype (auto: the model's own, float32 on CPU).",
)
db_option = click.option(
    "--db",
    envvar="PANDA_CHAT_DB",
    metavar="URL",
    help="Profile database: a SQLAlchemy URL or a SQLite file [env: PANDA_CHAT_DB; default: user data dir].",
)
embedder_option = click.option(
    "--embedder",
    envvar="PANDA_CHAT_EMBEDDER",
    metavar="MODEL",
    help="Sentence embedder: a sentence-transformers path, or 'hashing' "
    "[env: PANDA_CHAT_EMBEDDER; default: all-MiniLM-L6-v2].",
)


def parse_assignments(option: str, values: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE options -> {name: value}."""
    parsed = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got '{item}'", param_hint=option)
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


def reward_specs(values: tuple[str, ...], embedder: str | None = None) -> dict:
    """``--reward NAME=PATH`` (head file or reward-model folder) or ``NAME=zero-shot:DESCRIPTION``."""
    specs: dict[str, RewardSpec] = {}
    for name, value in parse_assignments("--reward", values).items():
        if value.startswith(ZERO_SHOT_PREFIX):
            from panda_chat.rewards.zero_shot import ZeroShotReward

            specs[name] = ZeroShotReward(value[len(ZERO_SHOT_PREFIX) :], name=name, embedder=embedder)
        else:
            specs[name] = value
    if not specs:
        raise click.UsageError("give at least one --reward NAME=PATH")
    return specs


def reward_weights(values: tuple[str, ...]) -> dict[str, float] | None:
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


force_option = click.option("--force", is_flag=True, help="Replace an existing output file or non-empty output folder.")
