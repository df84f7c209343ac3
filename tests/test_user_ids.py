"""User ids are checked in one place (``profiles.ids``) at every entry point: the store's API, the CLI, export
files, and ChatPanda per call (an empty per-call user is an error, never another user's profile)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panda_chat.cli import main
from profiles import (
    HashingEmbedder,
    ImportFormatError,
    InvalidUserIdError,
    ProfileStore,
    UnknownUserError,
    parse_export,
    validate_user_id,
)
from profiles.ids import MAX_USER_ID_LENGTH, is_valid_user_id


@pytest.mark.parametrize("bad", ["", "   ", " alice", "alice\n", "a\x00b", "x" * (MAX_USER_ID_LENGTH + 1), None, 0])
def test_ids_nobody_could_address_are_refused(bad) -> None:
    with pytest.raises(InvalidUserIdError):
        validate_user_id(bad)


@pytest.mark.parametrize("good", ["alice", "alice@example.com", "Zoë 42", "org/user-7", "x" * MAX_USER_ID_LENGTH])
def test_ordinary_ids_are_accepted_unchanged(good: str) -> None:
    assert validate_user_id(good) == good


def test_every_store_method_that_creates_a_user_refuses_a_bad_id(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "p.db", embedder=HashingEmbedder()) as store:
        for create in (
            lambda: store.create_user("a\x00b"),
            lambda: store.add_message(" ", "user", "hi"),
            lambda: store.new_conversation("x\ny"),
            lambda: store.set_preference("", "tone", "formal"),
            lambda: store.add_feedback("\t", prompt="p", response="r", rating=1),
            lambda: store.save_reward_head("\x7f", "h", b"data"),
        ):
            with pytest.raises(InvalidUserIdError):
                create()
        assert store.list_users() == []


def _export_text(user_id: str) -> str:
    return json.dumps(
        {"format": "panda-chat/profile", "version": 1, "user_id": user_id, "created_at": "2024-01-01T00:00:00Z"},
        indent=2,
    )


def test_an_export_with_a_bad_id_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match=r"bad\.json, line 4: user_id: .*control") as error:
        parse_export(_export_text("nul\x00here"), source="bad.json")
    assert error.value.line == 4
    with pytest.raises(ImportFormatError, match="empty"):
        parse_export(_export_text("   "), source="blank.json")
    path = tmp_path / "bad.json"
    path.write_text(_export_text("nul\x00here"))
    result = CliRunner().invoke(main, ["profile", "--db", str(tmp_path / "p.db"), "import", str(path)])
    assert result.exit_code == 1 and "line 4" in result.output


def test_import_as_a_bad_id_is_refused(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "p.db", embedder=HashingEmbedder()) as store:
        store.create_user("alice")
        export = store.export_user("alice")
        with pytest.raises(InvalidUserIdError):
            store.import_user(export, user_id="")
        with pytest.raises(InvalidUserIdError):
            store.import_user(export, user_id="bob\x00")


@pytest.mark.parametrize("command", [["profile", "create"], ["profile", "show"], ["profile", "export"]])
def test_cli_refuses_a_bad_positional_id_before_opening_the_store(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "p.db"
    result = CliRunner().invoke(main, [command[0], "--db", str(db), *command[1:], " "])
    assert result.exit_code == 2 and "user id" in result.output
    assert not db.exists()


def test_chat_with_an_empty_user_exits_before_the_first_prompt(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["chat", "--user", "", "--db", str(tmp_path / "p.db"), "--embedder", "hashing"], input="hello\n"
    )
    assert result.exit_code == 2 and "user id is empty" in result.output and "panda>" not in result.output


def test_chat_model_never_falls_back_to_its_own_user(tiny_models, tmp_path: Path) -> None:
    from panda_chat.chat_model import ChatPanda

    with ProfileStore(tmp_path / "p.db", embedder=HashingEmbedder()) as store:
        store.add_message("alice", "user", "alice's private words")
        llm = ChatPanda(model=str(tiny_models.base), store=store, user_id="alice", max_tokens=2, device="cpu")
        for empty in ("", None, 0):
            with pytest.raises(InvalidUserIdError):
                llm.invoke("Hello", config={"configurable": {"user_id": empty}})
        with pytest.raises(InvalidUserIdError):
            llm.explain(user_id="")
        assert [m.text for m in store.messages("alice")] == ["alice's private words"]


ids = st.text(min_size=0, max_size=12) | st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=140)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids)
def test_any_id_is_refused_or_round_trips_through_create_export_import_and_forget(user_id: str) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        ProfileStore(Path(folder) / "p.db", embedder=HashingEmbedder()) as store,
    ):
        if not is_valid_user_id(user_id):
            with pytest.raises(InvalidUserIdError):
                store.create_user(user_id)
            assert store.list_users() == []
            return
        store.create_user(user_id)
        store.add_message(user_id, "user", "some words")
        exported = parse_export(store.export_user(user_id).to_json())
        assert exported.user_id == user_id
        store.forget(user_id)
        assert store.import_user(exported) == user_id
        assert [m.text for m in store.messages(user_id)] == ["some words"]
        assert [user.user_id for user in store.list_users()] == [user_id]
        store.forget(user_id)
        assert store.list_users() == []
        with pytest.raises(UnknownUserError):
            store.messages(user_id)


@pytest.mark.parametrize("user_id", ["O'Brien; rm -rf ~", "two words", "a$b"])
def test_the_unknown_user_hint_is_a_command_the_shell_runs_as_written(user_id):
    import shlex

    from profiles.errors import UnknownUserError

    hint = str(UnknownUserError(user_id)).split("`")[1]
    assert shlex.split(hint) == ["panda-chat", "profile", "create", user_id]
