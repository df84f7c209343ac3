"""``panda-chat profile ...``: inspect, correct, export and delete what the profile store knows about a user.

    panda-chat profile create alice
    panda-chat profile log alice --role user "Explain it like I'm new to this, please."
    panda-chat profile import-history alice chats.jsonl
    panda-chat profile show alice                      # inferred + explicit preferences, with evidence
    panda-chat profile context alice "how do magnets work?" --json
    panda-chat profile set alice tone=formal
    panda-chat profile export alice -o alice.json && panda-chat profile import alice.json --as alice2
    panda-chat profile forget alice --yes

The database is ``--db`` (any SQLAlchemy URL or a file path), else ``$PANDA_CHAT_DB``, else the per-user default.
Every read command takes ``--json``. Commands that name a user refuse an unknown one (``create`` it first) and an
invalid id (``profiles.ids``); ``forget`` and ``list`` also handle ids stored before ids were validated (``list``
shows them quoted, ``forget --key`` names them by key). Errors are one line on stderr and a non-zero exit; every
write is one transaction, so a failed command stores nothing; outputs are never overwritten without ``--force``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from panda_chat.cli.errors import friendly_errors
from panda_chat.cli.options import (
    catalog_option,
    db_option,
    embedder_option,
    force_option,
    json_option,
    user_id_callback,
)
from panda_chat.output_paths import check_output, write_text
from profiles.errors import UnknownUserError
from profiles.ids import is_valid_user_id

if TYPE_CHECKING:  # the store (SQLAlchemy, faiss) and pydantic load when a command runs, never for --help
    from tqdm import tqdm

    from profiles import PreferenceContext, ProfileStore


class _StoreOpener:
    """Opens the store on first use (so ``--help`` and argument errors never touch the database)."""

    def __init__(self, db: str | None, embedder: str | None, catalog: str | None) -> None:
        self.db, self.embedder, self.catalog = db, embedder, catalog
        self._store: ProfileStore | None = None

    def __call__(self) -> ProfileStore:
        from profiles import PreferenceCatalog, ProfileStore

        if self._store is None:
            catalog = PreferenceCatalog.from_file(self.catalog) if self.catalog else None
            self._store = ProfileStore(self.db, embedder=self.embedder, catalog=catalog)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _opener(context: click.Context) -> _StoreOpener:
    opener = context.find_object(_StoreOpener)
    if opener is None:  # the profile group's callback sets it before any subcommand runs
        raise click.UsageError("run this command through `panda-chat profile`")
    return opener


def _store(context: click.Context) -> ProfileStore:
    return _opener(context)()


def _existing_user(store: ProfileStore, user: str) -> str:
    if not store.has_user(user):
        raise UnknownUserError(user)
    return user


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _progress(total: int, description: str) -> tuple[tqdm, Callable[[int], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit="msg", file=sys.stderr, disable=None, leave=False)
    return bar, bar.update


user_argument = click.argument("user", callback=user_id_callback)


def _shown(user_id: str) -> str:
    """A user id as printed: as is when valid, else quoted with escapes (a legacy id with a control character)."""
    return user_id if is_valid_user_id(user_id) else repr(user_id)


@click.group("profile")
@db_option
@embedder_option
@catalog_option
@click.pass_context
def profile(context: click.Context, db: str | None, embedder: str | None, catalog: str | None) -> None:
    """Manage user profiles: history, inferred and explicit preferences, feedback, export and deletion."""
    opener = _StoreOpener(db, embedder, catalog)
    context.obj = opener
    context.call_on_close(opener.close)


@profile.command("create")
@user_argument
@click.pass_context
@friendly_errors
def create(context: click.Context, user: str) -> None:
    """Create USER."""
    _store(context).create_user(user)
    click.echo(f"created {user}")


@profile.command("list")
@json_option()
@click.pass_context
@friendly_errors
def list_users(context: click.Context, as_json: bool) -> None:
    """List users with their message counts."""
    users = _store(context).list_users()
    if as_json:
        _print_json([user.model_dump(mode="json") for user in users])
        return
    for user in users:
        last = user.last_message_at.strftime("%Y-%m-%d %H:%M") if user.last_message_at else "-"
        note = "" if is_valid_user_id(user.user_id) else f"\t(invalid id: forget it with --key {user.key})"
        click.echo(f"{_shown(user.user_id)}\t{user.messages} messages\tlast {last}{note}")


def _format_context(preferences: PreferenceContext, explicit: dict[str, str], evidence: int) -> list[str]:
    lines = []
    for name, dimension in preferences.dimensions.items():
        poles = " / ".join(
            f"{pole} {weight:.2f}" for pole, weight in sorted(dimension.weights.items(), key=lambda item: -item[1])
        )
        note = f"explicit: {explicit[name]}" if name in explicit else dimension.source
        lines.append(f"  {name:<12} {poles:<36} confidence {dimension.confidence:.2f}  ({note})")
    shown = preferences.evidence[:evidence]
    if shown:
        lines.append("evidence:")
        for item in shown:
            text = " ".join(item.text.split())
            text = text if len(text) <= 70 else text[:67] + "..."
            reference = f"#{item.message_id}" if item.message_id is not None else item.kind
            lines.append(f"  {item.dimension}->{item.pole} {item.score:.2f}  {reference}  {text}")
    return lines


@profile.command("show")
@user_argument
@click.option(
    "--evidence", "evidence", type=click.IntRange(min=0), default=6, show_default=True, help="Evidence items to print."
)
@json_option()
@click.pass_context
@friendly_errors
def show(context: click.Context, user: str, evidence: int, as_json: bool) -> None:
    """Show USER's inferred and explicit preferences, with the evidence behind them."""
    store = _store(context)
    _existing_user(store, user)
    explicit = store.explicit_preferences(user)
    preferences = store.preferences(user)
    if as_json:
        _print_json(
            {
                "user_id": user,
                "explicit": explicit,
                "preferences": preferences.model_dump(mode="json"),
                "vector_layout": store.catalog.vector_layout(),
            }
        )
        return
    click.echo(f"{user}")
    for line in _format_context(preferences, explicit, evidence):
        click.echo(line)


@profile.command("log")
@user_argument
@click.argument("text", required=False)
@click.option("--role", type=click.Choice(["user", "assistant", "system"]), default="user", show_default=True)
@click.option("--conversation", type=int, default=None, help="Add to this conversation (default: a new one).")
@click.option(
    "--at",
    "created_at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="When it was said (UTC; default: now).",
)
@click.pass_context
@friendly_errors
def log(
    context: click.Context,
    user: str,
    text: str | None,
    role: str,
    conversation: int | None,
    created_at: datetime | None,
) -> None:
    """Record one message of USER's history: TEXT, or stdin when TEXT is missing or "-" (for long text)."""
    if text is None or text == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give the TEXT argument or pipe the text on stdin")
        text = sys.stdin.read()
    store = _store(context)
    _existing_user(store, user)
    message = store.add_message(user, role, text, conversation_id=conversation, created_at=created_at)
    click.echo(f"message {message.message_id} in conversation {message.conversation_id}")


@profile.command("import-history")
@user_argument
@click.argument("file", type=click.File("rb"))
@click.pass_context
@friendly_errors
def import_history(context: click.Context, user: str, file: Any) -> None:
    """Import USER's messages from a JSONL FILE ("-" for stdin): one {"role", "text", "created_at"?,
    "conversation"?} object per line. Every line is checked before anything is stored."""
    from profiles import parse_history

    store = _store(context)
    _existing_user(store, user)
    lines = parse_history(file, source=getattr(file, "name", "history"), max_chars=store.max_message_chars)
    bar, update = _progress(len(lines), "embedding")
    with bar:
        stored = store.import_history(user, lines, progress=update)
    conversations = len({message.conversation_id for message in stored})
    click.echo(f"imported {len(stored)} messages in {conversations} conversations for {user}")


@profile.command("context")
@user_argument
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Messages to retrieve.")
@json_option()
@click.pass_context
@friendly_errors
def context_command(context: click.Context, user: str, query: str, k: int, as_json: bool) -> None:
    """What a chat with USER would use for QUERY: retrieved messages and the preference context."""
    store = _store(context)
    _existing_user(store, user)
    hits = store.search(user, query, k=k)
    preferences = store.preferences(user, query=query)
    if as_json:
        _print_json(
            {
                "user_id": user,
                "query": query,
                "retrieved": [hit.model_dump(mode="json") for hit in hits],
                "preferences": preferences.model_dump(mode="json"),
            }
        )
        return
    click.echo("retrieved:")
    for hit in hits:
        click.echo(f"  {hit.score:.2f}  #{hit.message_id} [{hit.role}] {' '.join(hit.text.split())}")
    click.echo("preferences:")
    for line in _format_context(preferences, store.explicit_preferences(user), evidence=5):
        click.echo(line)


@profile.command("set")
@user_argument
@click.argument("settings", nargs=-1, required=True, metavar="DIMENSION=POLE...")
@click.pass_context
@friendly_errors
def set_preference(context: click.Context, user: str, settings: tuple[str, ...]) -> None:
    """Set explicit preferences (they override inference), e.g. tone=formal verbosity=concise."""
    store = _store(context)
    _existing_user(store, user)
    pairs = []
    for setting in settings:
        dimension, sep, pole = setting.partition("=")
        if not sep or not dimension or not pole:
            raise click.BadParameter(f"expected DIMENSION=POLE, got {setting!r}", param_hint="DIMENSION=POLE")
        store.catalog.dimension(dimension).pole(pole)  # check them all before storing any
        pairs.append((dimension, pole))
    from profiles.validation import check_unique

    check_unique((dimension for dimension, _ in pairs), "preference dimension")
    for dimension, pole in pairs:
        store.set_preference(user, dimension, pole)
        click.echo(f"{user}: {dimension} = {pole}")


@profile.command("unset")
@user_argument
@click.argument("dimension")
@click.pass_context
@friendly_errors
def unset_preference(context: click.Context, user: str, dimension: str) -> None:
    """Remove USER's explicit setting for DIMENSION (inference applies again)."""
    store = _store(context)
    _existing_user(store, user)
    removed = store.unset_preference(user, dimension)
    click.echo(f"{user}: {dimension} " + ("unset" if removed else "was not set"))


@profile.command("feedback")
@user_argument
@click.option("--prompt", required=True, help="The prompt the responses answer.")
@click.option("--chosen", help="The preferred response (with --rejected).")
@click.option("--rejected", help="The response it was preferred to.")
@click.option("--response", help="A response to rate (with --rating).")
@click.option("--message", "message_id", type=int, help="A stored message to rate (with --rating).")
@click.option("--rating", type=float, help="From -1 (bad) to 1 (good).")
@click.pass_context
@friendly_errors
def feedback(
    context: click.Context,
    user: str,
    prompt: str,
    chosen: str | None,
    rejected: str | None,
    response: str | None,
    message_id: int | None,
    rating: float | None,
) -> None:
    """Record feedback: --chosen/--rejected, or --rating of a --response or --message."""
    store = _store(context)
    _existing_user(store, user)
    feedback_id = store.add_feedback(
        user, prompt=prompt, response=response, rating=rating, chosen=chosen, rejected=rejected, message_id=message_id
    )
    click.echo(f"feedback {feedback_id} recorded for {user}")


@profile.command("export")
@user_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="File (default: stdout). Written under a temporary name, then renamed; readable by you only.",
)
@force_option
@click.pass_context
@friendly_errors
def export(context: click.Context, user: str, output: str, force: bool) -> None:
    """Write everything stored about USER as versioned JSON (``import`` reads it back)."""
    if output != "-":
        check_output(output, force=force)
    text = _store(context).export_user(user).to_json() + "\n"
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_text(output, text, force=force, private=True)


@profile.command("import")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--as", "user_id", default=None, callback=user_id_callback, help="Import under this user id instead of the file's."
)
@click.pass_context
@friendly_errors
def import_user(context: click.Context, file: Any, user_id: str | None) -> None:
    """Create a user from an export FILE ("-" for stdin)."""
    from profiles import InvalidInputError, UnknownDimensionError, UnknownPoleError, parse_export

    source = getattr(file, "name", "export")
    data = parse_export(file.read(), source=source)
    count = sum(len(conversation.messages) for conversation in data.conversations)
    bar, update = _progress(count, "embedding")
    try:
        with bar:
            name = _store(context).import_user(data, user_id=user_id, progress=update)
    except (UnknownDimensionError, UnknownPoleError, InvalidInputError) as error:  # content the store refuses
        raise InvalidInputError(f"{source}: {error}") from error
    click.echo(
        f"imported {name}: {count} messages, {len(data.feedback)} feedback, "
        f"{len(data.preferences)} settings, {len(data.reward_heads)} reward heads"
    )


@profile.command("forget")
@click.argument("user", required=False)
@click.option(
    "--key",
    type=int,
    default=None,
    help="Name the user by database key (see `profile list --json`), e.g. an id that cannot be typed.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to wait for other readers before failing [default: 10].",
)
@json_option()
@click.pass_context
@friendly_errors
def forget(
    context: click.Context, user: str | None, key: int | None, yes: bool, wait: float | None, as_json: bool
) -> None:
    """Delete USER and everything derived from them (messages, embeddings, index entries, feedback, settings,
    reward heads), verify that nothing remains in any file, and fail (exit 1) if it cannot."""
    if (user is None) == (key is None):
        raise click.UsageError("give exactly one of USER or --key KEY")
    store = _store(context)
    # Not validated: an id stored before validation existed must still be forgettable, exactly as stored.
    if key is not None:
        user = store.user_id_of_key(key)
    elif user is not None:
        user = _existing_user(store, user)
    else:  # excluded by the check above
        raise click.UsageError("give exactly one of USER or --key KEY")
    if not yes:
        click.confirm(f"Forget {_shown(user)} and everything stored about them?", abort=True, err=True)
    report = store.forget(user, wait_s=wait)
    if as_json:
        _print_json(report.model_dump(mode="json"))
        return
    counts = ", ".join(f"{count} {name}" for name, count in report.deleted.items())
    index = {
        "rewritten": "index cache rewritten",
        "deleted": "index cache deleted (rebuilt on next search)",
        "none": "no index cache file",
    }[report.index_file]
    wal = "; WAL emptied" if report.wal == "truncated" else ""
    click.echo(f"forgot {_shown(user)}: {counts}, {report.index_entries} index entries; {index}{wal}; nothing remains")


@profile.command("scrub")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to wait for other readers [default: the store's forget wait, 10].",
)
@click.pass_context
@friendly_errors
def scrub(context: click.Context, wait: float | None) -> None:
    """Finish a forget that other readers held up: copy the WAL into the database file and empty it."""
    result = _store(context).scrub(wait_s=wait)
    click.echo(
        "WAL emptied: deleted data remains in no file"
        if result == "truncated"
        else "nothing to do: this database has no WAL file"
    )


@profile.command("dimensions")
@json_option()
@click.pass_context
@friendly_errors
def dimensions(context: click.Context, as_json: bool) -> None:
    """List the preference catalog's dimensions and poles."""
    from profiles import PreferenceCatalog

    opener = _opener(context)
    catalog = PreferenceCatalog.from_file(opener.catalog) if opener.catalog else PreferenceCatalog.default()
    if as_json:
        _print_json(catalog.model_dump(mode="json"))
        return
    for dimension in catalog.dimensions:
        click.echo(f"{dimension.name}: " + " | ".join(dimension.pole_names))
        for pole in dimension.poles:
            click.echo(f"  {pole.name:<12} {pole.description}  [reward: {pole.reward.kind}]")
