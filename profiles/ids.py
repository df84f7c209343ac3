"""User ids: the one place that says what a user id may be.

Every entry point (the Python API, the CLI, history and export imports, ChatPanda per call, the server) passes the
ids it is given through ``validate_user_id`` before anything is read or written. A user id must be addressable from
every one of them, so it must survive a shell, a URL and a JSON file: non-empty once trimmed, no control characters
(a NUL byte or a newline would make it impossible to name on a command line), and bounded in length.

Surrounding whitespace is refused, not trimmed: trimming would make ``" alice"`` act as ``"alice"``, and two
spellings must never reach one person's data. A missing id is an error, never a fallback to some other user.
"""

from __future__ import annotations

import unicodedata

from profiles.errors import InvalidInputError

MAX_USER_ID_LENGTH = 128
"""Characters; long enough for an e-mail address or a UUID with a prefix, short enough to print in one line."""


class InvalidUserIdError(InvalidInputError):
    """A user id that is missing, empty, too long, padded with spaces, or holds control characters."""


def validate_user_id(value: object, *, where: str = "user id") -> str:
    """Return ``value`` unchanged when it is a valid user id, else raise ``InvalidUserIdError`` saying why.

    ``where`` names the source in the message (e.g. ``"configurable.user_id"`` or ``"line 4 of history.jsonl"``).
    Only strings are ids: ``0``, ``None`` and ``""`` are refused rather than turned into text.
    """
    if value is None:
        raise InvalidUserIdError(f"{where} is missing: pass the user's id (a non-empty string)")
    if not isinstance(value, str):
        raise InvalidUserIdError(f"{where} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise InvalidUserIdError(f"{where} is empty: pass the user's id (a non-empty string)")
    if value != value.strip():
        raise InvalidUserIdError(f"{where} {value!r} has leading or trailing whitespace: remove it")
    if len(value) > MAX_USER_ID_LENGTH:
        raise InvalidUserIdError(f"{where} is {len(value)} characters long; at most {MAX_USER_ID_LENGTH} are allowed")
    for char in value:
        if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}:
            raise InvalidUserIdError(
                f"{where} {value!r} contains the control or unprintable character U+{ord(char):04X}: remove it"
            )
    return value


def is_valid_user_id(value: object) -> bool:
    """True when ``validate_user_id`` accepts ``value`` (for listing legacy ids a database may already hold)."""
    try:
        validate_user_id(value)
    except InvalidUserIdError:
        return False
    return True
