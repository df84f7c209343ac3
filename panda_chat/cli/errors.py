"""One way for every ``panda-chat`` command to report a failure: one line on stderr and a non-zero exit code.

A user who passes a wrong folder or an impossible option needs the reason, not a traceback. Commands wrap their body
with ``@friendly_errors``; set ``PANDA_CHAT_DEBUG=1`` to get the full traceback instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable)


def one_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, prefixed with its type when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def friendly_errors(command: F) -> F:
    """Turn any exception raised by ``command`` into a ``click.ClickException`` (``Error: <one line>``, exit 1)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as error:
            if os.environ.get("PANDA_CHAT_DEBUG"):
                raise
            raise click.ClickException(one_line(error)) from error

    return wrapper  # type: ignore[return-value]
