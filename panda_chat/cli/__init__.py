"""The ``panda-chat`` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import click

from panda_chat import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="panda-chat")
def main() -> None:
    """Personalise LLM answers at decoding time (PANDA): generate, manage user profiles, train rewards, chat."""


# Command registration (one line per module; keep alphabetical):
from panda_chat.cli.generate import generate  # noqa: E402
main.add_command(generate)
from panda_chat.cli.reward import reward  # noqa: E402
main.add_command(reward)
from panda_chat.cli.profile import profile  # noqa: E402
main.add_command(profile)
from panda_chat.cli.eval import eval_command  # noqa: E402
main.add_command(eval_command)
from panda_chat.cli.lambda_fit import lambda_group  # noqa: E402
main.add_command(lambda_group)
from panda_chat.cli.chat import chat  # noqa: E402
main.add_command(chat)
from panda_chat.cli.demo import demo  # noqa: E402
main.add_command(demo)
