"""The profile store's errors.

Every error a user can cause (an unknown user, a bad file, a dimension that does not exist) derives from
``ProfileError`` and carries a one-line message saying what to do, so the CLI can print it as is and exit non-zero.
Errors about bad input also derive from ``ValueError`` / ``LookupError`` so callers that do not know this module can
still catch them idiomatically.
"""

from __future__ import annotations

import shlex


class ProfileError(Exception):
    """Base class of every error raised on purpose by the profile store."""


class UnknownUserError(ProfileError, LookupError):
    """The user does not exist in this store."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"unknown user {user_id!r}: create it with `panda-chat profile create {shlex.quote(user_id)}`")
        self.user_id = user_id

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a KeyError
        return str(self.args[0])


class UserExistsError(ProfileError, ValueError):
    """A user with this id already exists (raised where silently merging would be wrong, e.g. on import)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} already exists: forget it first or import under another id")
        self.user_id = user_id


class UserForgottenError(ProfileError):
    """The user was forgotten while a write for them was running (e.g. an import still embedding): the write is
    refused, so a forget is never undone."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} was forgotten while this write was running; nothing was stored")
        self.user_id = user_id


class ForgetIncompleteError(ProfileError):
    """The user's rows are deleted, but old copies of their pages may remain in a file (the SQLite WAL) because
    another connection kept reading; the message says what to run once it has stopped."""


class UnknownDimensionError(ProfileError, ValueError):
    """A preference dimension that the catalog does not define."""


class UnknownPoleError(ProfileError, ValueError):
    """A pole that the dimension does not define."""


class InvalidInputError(ProfileError, ValueError):
    """Input the store refuses: empty text, an unknown role, a rating out of range, a malformed setting."""


class SchemaTooNewError(ProfileError):
    """The database was written by a newer panda-chat, whose schema this version does not know."""


class ImportFormatError(ProfileError, ValueError):
    """A history (JSONL) or export (JSON) file that cannot be read; ``line`` is 1-based when known."""

    def __init__(self, message: str, *, source: str = "input", line: int | None = None) -> None:
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


class CatalogError(ProfileError, ValueError):
    """A preference catalog file that cannot be read or is inconsistent."""


class EmbedderError(ProfileError):
    """The embedder cannot be loaded or returned vectors of the wrong shape."""
