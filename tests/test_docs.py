"""The command line documents itself and the README documents the command line: every command and every option.

The command list comes from the CLI's own registry (``panda_chat.cli.COMMANDS``) and the groups' subcommands, so a
new command is covered as soon as it is registered.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from panda_chat.cli import COMMANDS, load_command, main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _command_paths() -> list[tuple[str, ...]]:
    """Every command path below ``panda-chat``: ("profile",), ("profile", "list"), ..."""
    paths: list[tuple[str, ...]] = []
    stack: list[tuple[tuple[str, ...], click.Command]] = [((name,), load_command(name)) for name in sorted(COMMANDS)]
    while stack:
        path, command = stack.pop(0)
        paths.append(path)
        if isinstance(command, click.Group):
            context = click.Context(command)
            stack += [((*path, name), command.get_command(context, name)) for name in command.list_commands(context)]
    return paths


def _resolve(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        resolved = command.get_command(click.Context(command), name)
        assert resolved is not None, f"panda-chat {' '.join(path)} does not resolve"
        command = resolved
    return command


PATHS = _command_paths()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_registry_names_each_command_and_repeats_its_own_help(name):
    command = load_command(name)
    assert command.name == name
    assert COMMANDS[name][1] == command.get_short_help_str(limit=1000), (
        f"panda_chat.cli.COMMANDS[{name!r}] help differs from the command's docstring; copy the first sentence"
    )


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_every_command_has_help(path):
    assert _resolve(path).get_short_help_str(limit=1000).strip(), f"panda-chat {' '.join(path)} has no help text"


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_every_command_is_in_the_readme(path):
    """``panda-chat a b`` is in the README, or a README line about ``panda-chat a`` names `b` in backticks."""
    full = "panda-chat " + " ".join(path)
    group_lines = [line for line in README.splitlines() if "panda-chat " + " ".join(path[:-1]) in line]
    in_group_line = len(path) > 1 and any(f"`{path[-1]}`" in line for line in group_lines)
    assert full in README or in_group_line, f"README.md does not mention `{full}`"


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_every_option_is_in_the_readme(path):
    """Each visible ``--option`` (either side of a ``--x/--no-x`` pair) is named in the README, as a whole word."""
    options = [
        flag
        for parameter in _resolve(path).params
        if isinstance(parameter, click.Option) and not parameter.hidden
        for flag in (*parameter.opts, *parameter.secondary_opts)
        if flag.startswith("--") and flag != "--help"
    ]
    missing = [flag for flag in options if not re.search(re.escape(flag) + r"(?![\w-])", README)]
    assert not missing, f"README.md does not mention {', '.join(missing)} of `panda-chat {' '.join(path)}`"
