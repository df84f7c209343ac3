"""The ``panda-chat`` command line. Each command group lives in its own module and is registered here by name.

The top-level group is lazy: ``panda-chat --help`` lists the commands from ``COMMANDS`` without importing them,
and a command's module is imported only when that command runs (or prints its own ``--help``). Each command module
imports torch, transformers, the profile store and LangChain inside its command functions, so help and argument
errors stay fast. ``tests/test_import_cost.py`` checks this in a fresh interpreter, for every command's ``--help``.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from panda_chat import __version__

# Command name -> ("module:attribute" of its click command, the one-line help `panda-chat --help` prints).
# A new command is one line here; tests/test_docs.py checks the help matches the command's own and the README names it.
COMMANDS: dict[str, tuple[str, str]] = {
    "chat": (
        "panda_chat.cli.chat:chat",
        "Chat in the terminal with answers personalised to USER; /help lists the commands.",
    ),
    "demo": (
        "panda_chat.cli.demo:demo",
        "Two users, the same questions, different answers: PANDA on the embedded demo models, offline.",
    ),
    "eval": (
        "panda_chat.cli.eval:eval_command",
        "Decode a prompt set with several methods and print rep-2/3/4, diversity, coherence, avg reward and J.",
    ),
    "generate": (
        "panda_chat.cli.generate:generate",
        "Generate an answer to PROMPT, steered token by token toward the given rewards (PANDA).",
    ),
    "key": ("panda_chat.cli.key:key", "Create, list and revoke the server's API keys."),
    "lambda": ("panda_chat.cli.lambda_fit:lambda_group", "Fit the learned, context-aware lambda."),
    "profile": (
        "panda_chat.cli.profile:profile",
        "Manage user profiles: history, inferred and explicit preferences, feedback, export and deletion.",
    ),
    "reward": ("panda_chat.cli.reward:reward", "Train reward models (Bradley-Terry heads or full models)."),
    "serve": (
        "panda_chat.cli.serve:serve",
        "Serve /v1/chat/completions (OpenAI's API) for every user of the profile database; create API keys with "
        "`panda-chat key create`.",
    ),
}


def load_command(name: str) -> click.Command:
    """Import and return the registered command ``name`` (its module is imported now, not at start-up)."""
    module_name, _, attribute = COMMANDS[name][0].partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{COMMANDS[name][0]} is not a click command; fix its entry in panda_chat.cli.COMMANDS")
    return command


class LazyGroup(click.Group):
    """A click group whose registered commands are imported only when one is resolved to run or show its help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command table of ``--help`` from the registry's one-line help, without importing any command."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # An unloaded command is shown through a stand-in with its registered help, shortened the way click does.
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="panda-chat")
def main() -> None:
    """Personalise LLM answers at decoding time (PANDA): generate, manage user profiles, train rewards, chat."""
    if not os.environ.get("PANDA_CHAT_DEBUG"):
        # transformers draws a progress bar for every model it loads; in a CLI that loads several small models per
        # command they are noise. panda-chat's own progress bars (imports, training, evaluation) stay. The
        # environment variable does it without importing transformers here (which would cost seconds per command).
        if "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        else:
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
