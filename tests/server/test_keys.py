"""API keys: shown once, stored hashed, bound to their users, revocable."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from panda_chat.cli import main
from profiles.errors import InvalidInputError
from profiles.keys import ApiKeys


def test_a_key_acts_only_as_its_users_and_is_stored_hashed(tmp_path: Path) -> None:
    db = tmp_path / "profiles.db"
    keys = ApiKeys(db)
    info, secret = keys.create("web", ["alice", "bob"])
    _, admin_secret = keys.create("backend", all_users=True)
    found = keys.authenticate(secret)
    assert found is not None and found.allows("alice") and found.allows("bob") and not found.allows("carol")
    assert keys.authenticate(admin_secret).allows("anyone")
    assert keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert keys.authenticate(None) is None and keys.authenticate("") is None
    assert [k.name for k in keys.list()] == ["web", "backend"] and info.prefix == secret[:8]
    keys.close()
    assert secret.encode() not in db.read_bytes()  # only the hash is stored
    with sqlite3.connect(db) as connection:
        stored = [row[0] for row in connection.execute("SELECT key_hash FROM api_keys")]
    assert secret not in stored and all(len(value) == 64 for value in stored)


def test_revoking_stops_a_key_at_once_in_every_process(tmp_path: Path) -> None:
    creator, server = ApiKeys(tmp_path / "p.db"), ApiKeys(tmp_path / "p.db")
    _, secret = creator.create("web", ["alice"])
    assert server.authenticate(secret) is not None
    assert creator.revoke("web") and not creator.revoke("web") and not creator.revoke("nope")
    assert server.authenticate(secret) is None
    assert creator.list()[0].revoked
    # the revoked key keeps its name (key list shows who had access): the error says so, not "revoke it first"
    with pytest.raises(InvalidInputError, match="revoked key is named 'web'"):
        creator.create("web", ["alice"])
    creator.close()
    server.close()


@pytest.mark.parametrize(
    ("name", "users", "all_users", "message"),
    [
        ("web", [], False, "--user"),
        ("web", ["alice"], True, "not both"),
        ("", ["alice"], False, "key name"),
        ("web", [" alice"], False, "whitespace"),
    ],
)
def test_bad_key_requests_are_refused(tmp_path: Path, name, users, all_users, message) -> None:
    keys = ApiKeys(tmp_path / "p.db")
    with pytest.raises(InvalidInputError, match=message):
        keys.create(name, users, all_users=all_users)
    keys.close()


def test_cli_prints_the_key_once_and_lists_and_revokes(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    runner = CliRunner()
    created = runner.invoke(main, ["key", "create", "web", "--user", "alice", "--db", db, "--json"])
    assert created.exit_code == 0, created.output
    secret = json.loads(created.stdout)["key"]
    listed = runner.invoke(main, ["key", "list", "--db", db, "--json"])
    assert secret not in listed.output and json.loads(listed.stdout)[0]["users"] == ["alice"]
    duplicate = runner.invoke(main, ["key", "create", "web", "--user", "bob", "--db", db])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    assert runner.invoke(main, ["key", "revoke", "web", "--db", db]).exit_code == 0
    again = runner.invoke(main, ["key", "revoke", "web", "--db", db])
    assert again.exit_code == 1 and "no active key" in again.output
