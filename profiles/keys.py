"""API keys of the HTTP server (``panda-chat serve``): each key acts only as the users it was created for.

A key is a random secret shown once, at creation; the database keeps only its SHA-256 hash (the secret is 256 random
bits, so a fast hash is enough: there is nothing to brute-force) and an 8-character prefix to recognise it by in
listings. A key is bound to a list of user ids, or to every user (``all_users``, for a trusted backend that speaks for
its own users). Revoking keeps the row (so ``key list`` still shows who had access) and stops it at once, in every
server process on the database, because each request is checked against the database.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, select

from profiles.database import create_store_engine, default_url, normalise_url, upgrade_schema
from profiles.errors import InvalidInputError
from profiles.ids import validate_user_id
from profiles.models import MAX_KEY_NAME_LENGTH, ApiKey
from profiles.transactions import Transactions, now

KEY_PREFIX = "pck_"


class KeyInfo(BaseModel):
    """What a key may do, without its secret."""

    name: str
    prefix: str
    users: list[str]
    all_users: bool
    created_at: datetime
    revoked: bool

    def allows(self, user_id: str) -> bool:
        return not self.revoked and (self.all_users or user_id in self.users)

    @classmethod
    def of(cls, row: Any) -> KeyInfo:
        """From an ``ApiKey`` row (an ORM object or a Core row: the same attribute names)."""
        return cls(
            name=row.name,
            prefix=row.prefix,
            users=list(row.users),
            all_users=row.all_users,
            created_at=row.created_at,
            revoked=row.revoked_at is not None,
        )


# Run on every request the server answers: built once, a Core statement (see ``profiles.transactions``).
_KEY_BY_HASH = select(ApiKey.__table__).where(ApiKey.__table__.c.key_hash == bindparam("key_hash"))


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiKeys:
    """The ``api_keys`` table of one profile database (a URL or a SQLite path; None: the default database)."""

    def __init__(self, url: str | os.PathLike[str] | None = None):
        self.url = normalise_url(url) if url is not None else default_url()
        self._engine = create_store_engine(self.url)
        upgrade_schema(self._engine)
        self._transactions = Transactions(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def create(self, name: str, users: Sequence[str] = (), all_users: bool = False) -> tuple[KeyInfo, str]:
        """A new key acting as ``users`` (or every user); returns its info and the secret (shown once)."""
        if not name or len(name) > MAX_KEY_NAME_LENGTH or name != name.strip():
            raise InvalidInputError(
                f"key name {name!r} must be 1 to {MAX_KEY_NAME_LENGTH} characters without surrounding spaces"
            )
        if all_users == bool(users):
            raise InvalidInputError("give the users the key acts as (--user U, repeatable) or --all-users, not both")
        checked = sorted({validate_user_id(user, where="--user") for user in users})
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            name=name,
            key_hash=hash_key(secret),
            prefix=secret[: len(KEY_PREFIX) + 4],
            users=checked,
            all_users=all_users,
            created_at=now(),
        )
        with self._transactions.write() as session:
            existing = session.scalar(select(ApiKey).where(ApiKey.name == name))
            if existing is not None and existing.revoked_at is not None:
                # a revoked key keeps its row and name, so `key list` still shows who had access: revoking frees
                # no name
                raise InvalidInputError(f"a revoked key is named {name!r} (names are not reused): pick another name")
            if existing is not None:
                raise InvalidInputError(f"a key named {name!r} already exists: pick another name")
            session.add(row)
            session.flush()
            info = KeyInfo.of(row)
        return info, secret

    def list(self) -> list[KeyInfo]:
        with self._transactions.read() as session:
            return [KeyInfo.of(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]

    def revoke(self, name: str) -> bool:
        """Stop a key at once; False when no active key has that name."""
        with self._transactions.write() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.name == name))
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = now()
            return True

    def authenticate(self, secret: str | None) -> KeyInfo | None:
        """The active key with this secret, else None."""
        if not secret or not secret.startswith(KEY_PREFIX):
            return None
        with self._transactions.read() as session:
            row = session.execute(_KEY_BY_HASH, {"key_hash": hash_key(secret)}).first()
            if row is None or row.revoked_at is not None:
                return None
            return KeyInfo.of(row)
