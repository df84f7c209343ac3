"""Shared CLI options: every command spells them the same and reads the same environment variable.

Cheap: the structural tests resolve each command's options without running it (no model, no database); the
behavioural ones run ``profile`` and ``key`` commands on a temporary SQLite file with the hashing embedder.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from panda_chat.cli import COMMANDS, load_command, main
from panda_chat.cli.options import parse_assignments, parse_floats, parse_rewards, parse_weights

# option -> (its environment variable, a value the test sets it to)
SHARED = {
    "--db": ("PANDA_CHAT_DB", "sqlite:///from-env.db"),
    "--embedder": ("PANDA_CHAT_EMBEDDER", "hashing"),
    "--catalog": ("PANDA_CHAT_CATALOG", "{catalog}"),
    "--model": ("PANDA_CHAT_MODEL", "./model-from-env"),
    "--base": ("PANDA_CHAT_MODEL", "./model-from-env"),
    "--device": ("PANDA_CHAT_DEVICE", "cpu"),
    "--dtype": ("PANDA_CHAT_DTYPE", "float32"),
    "--threads": ("PANDA_CHAT_THREADS", "3"),
}
# The commands that open the profile database; each must take --db.
DATABASE_COMMANDS = {"chat", "profile", "serve", "key create", "key list", "key revoke", "reward train"}
# Every variable the tests set, unset for the runs that must not see one left in the environment.
NO_ENV = {variable: None for variable, _ in SHARED.values()}


def _commands() -> dict[str, click.Command]:
    """Every command path below ``panda-chat`` ("profile", "profile list", ...) -> its click command."""
    found: dict[str, click.Command] = {}
    stack = [(name, load_command(name)) for name in sorted(COMMANDS)]
    while stack:
        path, command = stack.pop()
        found[path] = command
        if isinstance(command, click.Group):
            context = click.Context(command)
            stack += [(f"{path} {name}", command.get_command(context, name)) for name in command.list_commands(context)]
    return found


def _option(command: click.Command, flag: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and flag in p.opts), None)


COMMAND_TREE = _commands()
WITH_SHARED = sorted(path for path, command in COMMAND_TREE.items() if any(_option(command, f) for f in SHARED))


def test_every_command_that_opens_the_database_takes_db():
    assert {path for path, command in COMMAND_TREE.items() if _option(command, "--db")} == DATABASE_COMMANDS


@pytest.mark.parametrize("path", WITH_SHARED)
def test_every_shared_option_reads_its_environment_variable(path, monkeypatch, tmp_path):
    """Resolves the command's options (without running it) with only the environment set."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("", encoding="utf-8")
    command = COMMAND_TREE[path]
    expected = {}
    for flag, (variable, value) in SHARED.items():
        option = _option(command, flag)
        if option is None:
            continue
        value = value.format(catalog=catalog)
        monkeypatch.setenv(variable, value)
        assert option.envvar == variable, f"panda-chat {path} {flag} reads {option.envvar!r}, not {variable}"
        assert option.show_envvar, f"panda-chat {path} {flag} does not show {variable} in --help"
        expected[option.name] = option.type.convert(value, option, None)
    with command.make_context(path, [], resilient_parsing=True) as context:
        assert {name: context.params[name] for name in expected} == expected


def test_same_option_same_declaration_everywhere():
    """--db, --embedder, ... mean one thing: the same help, type and default in every command that has them."""
    for flag in SHARED:
        declarations = {
            (option.help, repr(option.type), option.default, option.metavar)
            for command in COMMAND_TREE.values()
            if (option := _option(command, flag)) is not None
        }
        assert len(declarations) == 1, f"{flag} is declared {len(declarations)} ways: {declarations}"


def test_profile_commands_read_the_database_from_the_flag_and_from_the_environment(tmp_path: Path):
    runner = CliRunner()
    flag_db, env_db = tmp_path / "flag.sqlite", tmp_path / "env.sqlite"
    env = NO_ENV | {"PANDA_CHAT_EMBEDDER": "hashing"}
    created = runner.invoke(main, ["profile", "--db", str(flag_db), "create", "alice"], env=env)
    assert created.exit_code == 0, created.output
    created = runner.invoke(main, ["profile", "create", "bob"], env=env | {"PANDA_CHAT_DB": str(env_db)})
    assert created.exit_code == 0, created.output

    def users(args: list[str], **extra: str) -> list[str]:
        result = runner.invoke(main, ["profile", *args, "list", "--json"], env=env | extra)
        assert result.exit_code == 0, result.output
        return [row["user_id"] for row in json.loads(result.output)]

    assert users(["--db", str(flag_db)]) == ["alice"]
    assert users([], PANDA_CHAT_DB=str(env_db)) == ["bob"]
    assert users(["--db", str(flag_db)], PANDA_CHAT_DB=str(env_db)) == ["alice"]  # the flag wins


def test_key_commands_read_the_database_from_the_flag_and_from_the_environment(tmp_path: Path):
    runner = CliRunner()
    db = tmp_path / "keys.sqlite"
    created = runner.invoke(main, ["key", "create", "app", "--all-users", "--db", str(db), "--json"], env=NO_ENV)
    assert created.exit_code == 0, created.output
    listed = runner.invoke(main, ["key", "list", "--json"], env=NO_ENV | {"PANDA_CHAT_DB": str(db)})
    assert listed.exit_code == 0, listed.output
    assert [row["name"] for row in json.loads(listed.output)] == ["app"]
    revoked = runner.invoke(main, ["key", "revoke", "app"], env=NO_ENV | {"PANDA_CHAT_DB": str(db)})
    assert revoked.exit_code == 0, revoked.output
    listed = runner.invoke(main, ["key", "list", "--json", "--db", str(db)], env=NO_ENV)
    assert [row["revoked"] for row in json.loads(listed.output)] == [True]


def test_the_deprecated_store_flag_still_beats_the_environment_but_not_db(tiny_models, tmp_path: Path):
    """``reward train --store`` (hidden alias of ``--db``) wins over PANDA_CHAT_DB, and ``--db`` wins over it."""
    env_db, alias_db, flag_db = (tmp_path / f"{name}.sqlite" for name in ("env", "alias", "flag"))
    env = NO_ENV | {"PANDA_CHAT_DB": str(env_db), "PANDA_CHAT_EMBEDDER": "hashing"}
    train = ["reward", "train", "--base", str(tiny_models.base), "--from-feedback", "nobody"]
    result = CliRunner().invoke(main, [*train, "--store", str(alias_db)], env=env)
    assert result.exit_code != 0 and "nobody" in result.output  # no feedback there: the store it opened says so
    assert alias_db.exists() and not env_db.exists()
    result = CliRunner().invoke(main, [*train, "--store", str(alias_db), "--db", str(flag_db)], env=env)
    assert result.exit_code != 0 and flag_db.exists() and not env_db.exists()


# NAME=VALUE parts the parsers must keep: no "=" in a name, nothing that strips to empty.
_NAMES = st.text(st.characters(blacklist_characters="=", blacklist_categories=("Cs",)), min_size=1).filter(str.strip)
_VALUES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).filter(str.strip)


@given(st.dictionaries(_NAMES.map(str.strip), _VALUES.map(str.strip), max_size=5))
def test_assignments_parse_back_to_what_was_written(pairs):
    assert parse_assignments("--x", tuple(f"{name}={value}" for name, value in pairs.items())) == pairs


@given(st.text().filter(lambda item: "=" not in item or not item.partition("=")[0].strip()))
def test_an_assignment_without_a_name_or_an_equals_sign_is_refused_with_the_option_named(item):
    with pytest.raises(click.BadParameter) as error:
        parse_assignments("--reward", (item,))
    assert error.value.param_hint == "--reward"


@given(_NAMES, _VALUES, _VALUES)
def test_a_name_given_twice_is_refused_instead_of_keeping_the_last(name, first, second):
    with pytest.raises(click.BadParameter, match="given twice") as error:
        parse_assignments("--reward", (f"{name}={first}", f" {name} ={second}"))
    assert error.value.param_hint == "--reward"


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=6))
def test_number_lists_parse_back_and_negative_numbers_are_refused(numbers):
    text = ",".join(repr(n) for n in numbers)
    assert parse_floats("--lam-grid", text) == numbers
    with pytest.raises(click.BadParameter):
        parse_floats("--lam-grid", text + ",-1")


@given(st.dictionaries(_NAMES.map(str.strip), _VALUES.map(str.strip), min_size=1, max_size=4))
def test_rewards_are_paths_unless_zero_shot(pairs):
    """Every form goes through one parser: a path stays a path, ``zero-shot:TEXT`` becomes a zero-shot reward."""
    paths = {name: value for name, value in pairs.items() if not value.startswith("zero-shot:")}
    assert parse_rewards(tuple(f"{name}={value}" for name, value in paths.items()), required=False) == paths


def test_zero_shot_rewards_are_built_with_the_given_embedder():
    from panda_chat.rewards.zero_shot import ZeroShotReward

    parsed = parse_rewards(("simple=zero-shot: A simple answer.", "formal=./formal.safetensors"), embedder="hashing")
    assert parsed["formal"] == "./formal.safetensors"
    assert isinstance(parsed["simple"], ZeroShotReward) and parsed["simple"].description == "A simple answer."
    assert parse_rewards((), required=False) == {}
    with pytest.raises(click.UsageError, match="at least one --reward"):
        parse_rewards(())
    with pytest.raises(click.BadParameter, match="must be a number"):
        parse_weights(("simple=much",))
