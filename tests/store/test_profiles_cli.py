"""``panda-chat profile ...`` end to end through click's runner, on a temporary database with the hashing embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from panda_chat.cli import main
from profiles import HashingEmbedder, ProfileStore


@pytest.fixture
def cli(db_url: str):
    runner = CliRunner()
    database = db_url

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(main, ["profile", "--db", str(database), "--embedder", "hashing", *args], input=input)

    invoke.database = database  # type: ignore[attr-defined]
    return invoke


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def _fails(result: Result, message: str) -> None:
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and message in last, result.output


def test_create_log_list_show_and_context(cli) -> None:
    _ok(cli("create", "alice"))
    assert "message 1 in conversation 1" in _ok(cli("log", "alice", "I need a formal letter to the board")).output
    _ok(cli("log", "alice", "--role", "assistant", "--conversation", "1", "Certainly, here is a draft."))
    users = json.loads(_ok(cli("list", "--json")).output)
    assert [(u["user_id"], u["messages"]) for u in users] == [("alice", 2)]
    shown = json.loads(_ok(cli("show", "alice", "--json")).output)
    assert set(shown["preferences"]["dimensions"]) == {"expertise", "verbosity", "tone"}
    assert len(shown["preferences"]["vector"]) == len(shown["vector_layout"]) == 9
    context = json.loads(_ok(cli("context", "alice", "a formal letter", "--json")).output)
    assert context["retrieved"][0]["text"] == "I need a formal letter to the board"
    assert "tone" in _ok(cli("show", "alice")).output


def test_import_history_is_all_or_nothing(cli, tmp_path: Path) -> None:
    _ok(cli("create", "bob"))
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"role": "user", "text": "first", "created_at": "2024-01-01T10:00:00Z", "conversation": "a"}\n'
        '{"role": "assistant", "content": "reply", "conversation": "a"}\n\n'
        '{"role": "user", "text": "other topic", "timestamp": 1704103200}\n',
        encoding="utf-8",
    )
    assert "imported 3 messages in 2 conversations" in _ok(cli("import-history", "bob", str(good))).output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "user", "text": "would be fine"}\n{"role": "user", "text": ""}\n', encoding="utf-8")
    _fails(cli("import-history", "bob", str(bad)), "line 2: text: text is empty")
    assert json.loads(_ok(cli("list", "--json")).output)[0]["messages"] == 3


def test_set_unset_and_feedback(cli) -> None:
    _ok(cli("create", "carol"))
    _ok(cli("set", "carol", "tone=formal", "verbosity=concise"))
    shown = json.loads(_ok(cli("show", "carol", "--json")).output)
    assert shown["explicit"] == {"tone": "formal", "verbosity": "concise"}
    assert shown["preferences"]["dimensions"]["tone"]["source"] == "explicit"
    _fails(cli("set", "carol", "tone=formal", "mood=happy"), "unknown dimension 'mood'")
    _fails(cli("set", "carol", "verbosity=medium"), "unknown pole 'medium'")
    _fails(cli("set", "carol", "toneformal"), "expected DIMENSION=POLE")
    _ok(cli("unset", "carol", "tone"))
    assert json.loads(_ok(cli("show", "carol", "--json")).output)["explicit"] == {"verbosity": "concise"}
    _ok(cli("feedback", "carol", "--prompt", "hi", "--chosen", "Hello!", "--rejected", "Greetings, madam."))
    _ok(cli("feedback", "carol", "--prompt", "hi", "--response", "Yo", "--rating", "-1"))
    _fails(cli("feedback", "carol", "--prompt", "hi", "--response", "Yo", "--rating", "5"), "out of range")
    with ProfileStore(cli.database, embedder=HashingEmbedder()) as store:
        assert [(p.chosen, p.rejected) for p in store.feedback_pairs("carol")] == [("Hello!", "Greetings, madam.")]


def test_export_import_round_trip_and_forget(cli, tmp_path: Path) -> None:
    _ok(cli("create", "dave"))
    _ok(cli("log", "dave", "a message about gardening"))
    _ok(cli("set", "dave", "expertise=expert"))
    exported = _ok(cli("export", "dave")).output
    assert json.loads(exported)["version"] == 1
    export_file = tmp_path / "dave.json"
    export_file.write_text(exported, encoding="utf-8")
    _fails(cli("import", str(export_file)), "already exists")
    _ok(cli("import", str(export_file), "--as", "dave2"))
    again = json.loads(_ok(cli("export", "dave2")).output)
    assert {**again, "user_id": "dave"} == json.loads(exported)
    assert _ok(cli("forget", "dave", "--yes")).output.startswith("forgot dave: 1 conversations, 1 messages")
    assert cli("forget", "dave2", input="n\n").exit_code != 0  # declined: nothing deleted
    assert [u["user_id"] for u in json.loads(_ok(cli("list", "--json")).output)] == ["dave2"]
    _fails(cli("show", "dave"), "unknown user 'dave'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "nobody"), "unknown user 'nobody'"),
        (("log", "nobody", "hi"), "unknown user 'nobody'"),
        (("context", "nobody", "q"), "unknown user 'nobody'"),
        (("export", "nobody"), "unknown user 'nobody'"),
        (("forget", "nobody", "--yes"), "unknown user 'nobody'"),
    ],
)
def test_unknown_users_are_one_line_errors(cli, args: tuple[str, ...], message: str) -> None:
    _fails(cli(*args), message)


def test_empty_text_and_malformed_files_are_refused(cli, tmp_path: Path) -> None:
    _ok(cli("create", "erin"))
    _fails(cli("log", "erin", "   "), "text is empty")
    not_export = tmp_path / "x.json"
    not_export.write_text('{"hello": 1}', encoding="utf-8")
    _fails(cli("import", str(not_export)), "not a panda-chat profile export")
    assert json.loads(_ok(cli("list", "--json")).output)[0]["messages"] == 0


def test_dimensions_lists_the_catalog(cli) -> None:
    output = _ok(cli("dimensions")).output
    assert "tone: friendly | formal" in output
    assert [d["name"] for d in json.loads(_ok(cli("dimensions", "--json")).output)["dimensions"]] == [
        "expertise",
        "verbosity",
        "tone",
    ]
