"""The ``panda-chat`` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import os

import click

from panda_chat import __version__
from panda_chat.cli.chat import chat
from panda_chat.cli.demo import demo
from panda_chat.cli.eval import eval_command
from panda_chat.cli.generate import generate
from panda_chat.cli.key import key
from panda_chat.cli.lambda_fit import lambda_group
from panda_chat.cli.profile import profile
from panda_chat.cli.reward import reward
from panda_chat.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="panda-chat")
def main() -> None:
    """Personalise LLM answers at decoding time (PANDA): generate, manage user profiles, train rewards, chat."""
    if not os.environ.get("PANDA_CHAT_DEBUG"):
        # transformers draws a progress bar for every model it loads; in a CLI that loads several small models per
        # command they are noise. panda-chat's own progress bars (imports, training, evaluation) stay.
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


for command in (chat, demo, eval_command, generate, key, lambda_group, profile, reward, serve):
    main.add_command(command)
