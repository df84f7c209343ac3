"""``panda-chat key``: API keys of the server, each bound to the users it may act as (``profiles.keys``)."""

from __future__ import annotations

import json

import click

from panda_chat.cli.errors import friendly_errors
from panda_chat.cli.options import db_option, json_option


@click.group("key")
def key() -> None:
    """Create, list and revoke the server's API keys."""


@key.command("create")
@click.argument("name")
@click.option("--user", "users", multiple=True, help="A user the key may act as (repeatable).")
@click.option("--all-users", is_flag=True, help="The key may act as every user (a trusted backend).")
@db_option
@json_option()
@friendly_errors
def create(name: str, users: tuple[str, ...], all_users: bool, db: str | None, as_json: bool) -> None:
    """Create key NAME and print it, once: only its hash is stored."""
    from profiles.keys import ApiKeys  # SQLAlchemy loads when the command runs, never for --help

    keys = ApiKeys(db)
    try:
        info, secret = keys.create(name, users, all_users=all_users)
    finally:
        keys.close()
    if as_json:
        click.echo(json.dumps({"key": secret, "name": info.name, "users": info.users, "all_users": info.all_users}))
        return
    click.echo(secret)
    click.echo(
        f"(key {info.name!r} for {'every user' if info.all_users else ', '.join(info.users)}; it is shown only now)",
        err=True,
    )


@key.command("list")
@db_option
@json_option()
@friendly_errors
def list_keys(db: str | None, as_json: bool) -> None:
    """List keys: name, prefix, users, revoked."""
    from profiles.keys import ApiKeys  # SQLAlchemy loads when the command runs, never for --help

    keys = ApiKeys(db)
    try:
        infos = keys.list()
    finally:
        keys.close()
    if as_json:
        click.echo(json.dumps([info.model_dump(mode="json") for info in infos]))
        return
    for info in infos:
        who = "all users" if info.all_users else ",".join(info.users)
        click.echo(f"{info.name}\t{info.prefix}…\t{who}\t{'revoked' if info.revoked else 'active'}")


@key.command("revoke")
@click.argument("name")
@db_option
@friendly_errors
def revoke(name: str, db: str | None) -> None:
    """Revoke key NAME at once (every server on the database refuses it from its next request)."""
    from profiles.keys import ApiKeys  # SQLAlchemy loads when the command runs, never for --help

    keys = ApiKeys(db)
    try:
        if not keys.revoke(name):
            raise click.ClickException(f"no active key named {name!r} (see `panda-chat key list`)")
    finally:
        keys.close()
    click.echo(f"revoked {name}")
