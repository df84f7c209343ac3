"""Bad input gets one line that says what and where, and a non-zero exit; outputs are never overwritten."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from panda_chat.cli import main
from panda_chat.output_paths import OutputExistsError, atomic_file, atomic_folder
from profiles import HashingEmbedder, ProfileStore


def _one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert lines and lines[-1].startswith("Error:") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def test_invalid_utf8_in_a_history_file_names_the_file_and_line(tmp_path: Path) -> None:
    db, history = tmp_path / "p.db", tmp_path / "chats.jsonl"
    history.write_bytes(b'{"role": "user", "text": "fine"}\n{"role": "user", "text": "caf\xe9"}\n')
    runner = CliRunner()
    runner.invoke(main, ["profile", "--db", str(db), "create", "alice"])
    result = runner.invoke(
        main, ["profile", "--db", str(db), "--embedder", "hashing", "import-history", "alice", str(history)]
    )
    _one_line_error(result, "chats.jsonl, line 2", "not valid UTF-8", "0xe9")


def test_invalid_utf8_in_reward_pairs_names_the_file_and_line(tmp_path: Path, tiny_models) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n\xff\xfe\n')
    result = CliRunner().invoke(
        main,
        [
            "reward",
            "train",
            "--base",
            str(tiny_models.base),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "h.safetensors"),
        ],
    )
    _one_line_error(result, "pairs.jsonl, line 2", "not valid UTF-8")


def test_a_corrupt_reward_file_names_the_file_and_the_reward(tmp_path: Path, tiny_models) -> None:
    head = tmp_path / "formal.safetensors"
    head.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    result = CliRunner().invoke(
        main, ["generate", "hi", "--base", str(tiny_models.base), "--device", "cpu", "--reward", f"formal={head}"]
    )
    _one_line_error(result, "reward 'formal'", str(head), "corrupt")


def test_a_folder_that_is_not_a_model_says_so_in_full(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a model")
    result = CliRunner().invoke(main, ["generate", "hi", "--base", str(folder), "--device", "cpu"])
    _one_line_error(result, str(folder), "not a model folder", "config.json")


def test_a_model_folder_without_a_tokenizer_gets_the_whole_message(tmp_path: Path, tiny_models) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text((Path(tiny_models.base) / "config.json").read_text())
    result = CliRunner().invoke(main, ["generate", "hi", "--base", str(folder), "--device", "cpu"])
    line = _one_line_error(result, str(folder))
    assert not line.rstrip().endswith(":")  # never cut at a colon


@pytest.mark.parametrize("path", ["./no-such-model", "~/no/such/model", "{tmp}/typo/model", "{tmp}/typo"])
def test_a_local_looking_path_that_does_not_exist_fails_at_once(tmp_path: Path, path: str, monkeypatch) -> None:
    (tmp_path / "real").mkdir()
    path = path.format(tmp=tmp_path)
    connections: list[object] = []

    def no_network(self, address, *args, **kwargs):
        connections.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    result = CliRunner().invoke(main, ["generate", "hi", "--base", path, "--device", "cpu"])
    assert connections == []  # never asks the hub (offline, its retries take close to a minute)
    _one_line_error(result, "not found")


def test_a_typo_inside_an_existing_folder_never_goes_to_the_hub(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    result = CliRunner().invoke(main, ["generate", "hi", "--base", "models/bsae", "--device", "cpu"])
    _one_line_error(result, "folder not found: models/bsae")


def test_demo_with_a_missing_embedder_is_one_line() -> None:
    result = CliRunner().invoke(main, ["demo", "--embedder", "/nonexistent", "--questions", "1"])
    _one_line_error(result, "/nonexistent")


def test_chat_with_a_bad_embedder_fails_before_the_first_prompt(tmp_path: Path, tiny_models) -> None:
    result = CliRunner().invoke(
        main,
        [
            "chat",
            "--user",
            "alice",
            "--model",
            str(tiny_models.base),
            "--db",
            str(tmp_path / "p.db"),
            "--embedder",
            "/nonexistent",
        ],
        input="hello\n",
    )
    _one_line_error(result, "/nonexistent")
    assert "panda>" not in result.output and "chatting as" not in result.output


def test_chat_no_record_then_good_writes_nothing(tmp_path: Path, tiny_models) -> None:
    db = tmp_path / "p.db"
    result = CliRunner().invoke(
        main,
        [
            "chat",
            "--user",
            "alice",
            "--model",
            str(tiny_models.base),
            "--db",
            str(db),
            "--embedder",
            "hashing",
            "--max-tokens",
            "3",
            "--device",
            "cpu",
            "--no-record",
        ],
        input="Hello\n/good\n/prefer\n/prefer 1\n/train\n",
    )
    assert result.exit_code == 0, result.output
    assert "not stored" in result.output
    with ProfileStore(db, embedder=HashingEmbedder()) as store:
        assert store.list_users() == []


def test_a_failed_chat_turn_makes_the_exit_code_non_zero(tmp_path: Path, tiny_models) -> None:
    result = CliRunner().invoke(
        main,
        [
            "chat",
            "--user",
            "alice",
            "--model",
            str(tiny_models.base),
            "--db",
            str(tmp_path / "p.db"),
            "--embedder",
            "hashing",
            "--max-tokens",
            "3",
            "--device",
            "cpu",
        ],
        input="word " * 3000 + "\n",
    )
    assert result.exit_code == 1 and "1 turn(s) failed" in result.output


def test_a_tampered_import_with_a_duplicate_setting_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with ProfileStore(db, embedder=HashingEmbedder()) as store:
        store.set_preference("alice", "tone", "formal")
        data = json.loads(store.export_user("alice").to_json())
    data["preferences"].append(dict(data["preferences"][0], pole="friendly"))
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data, indent=2))
    result = CliRunner().invoke(main, ["profile", "--db", str(db), "import", str(tampered), "--as", "alice2"])
    _one_line_error(result, "tampered.json", "preference dimension 'tone' is given twice")
    result = CliRunner().invoke(main, ["profile", "--db", str(db), "set", "alice", "tone=formal", "tone=friendly"])
    _one_line_error(result, "given twice")


def test_reward_train_refuses_a_non_empty_folder_unless_forced(tmp_path: Path, tiny_models) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "chosen": "good answer", "rejected": "bad"}) + "\n" for i in range(8))
    )
    out = tmp_path / "base-copy"
    out.mkdir()
    (out / "config.json").write_text('{"precious": true}')
    command = [
        "reward",
        "train",
        "--base",
        str(tiny_models.base),
        "--data",
        str(data),
        "--out",
        str(out),
        "--kind",
        "model",
        "--epochs",
        "1",
        "--val-split",
        "0",
    ]
    _one_line_error(CliRunner().invoke(main, command), "not empty", "--force")
    assert (out / "config.json").read_text() == '{"precious": true}'
    result = CliRunner().invoke(main, [*command, "--force"])
    assert result.exit_code == 0, result.output
    assert "precious" not in (out / "config.json").read_text() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_profile_export_never_overwrites_without_force(tmp_path: Path) -> None:
    db, out = tmp_path / "p.db", tmp_path / "alice.json"
    runner = CliRunner()
    runner.invoke(main, ["profile", "--db", str(db), "create", "alice"])
    out.write_text("an older export")
    _one_line_error(
        runner.invoke(main, ["profile", "--db", str(db), "export", "alice", "-o", str(out)]),
        "already exists",
        "--force",
    )
    assert out.read_text() == "an older export"
    result = runner.invoke(main, ["profile", "--db", str(db), "export", "alice", "-o", str(out), "--force"])
    assert result.exit_code == 0 and json.loads(out.read_text())["user_id"] == "alice"
    assert out.stat().st_mode & 0o077 == 0  # a person's data: readable by its owner only


def _crash_while_writing(output, write) -> None:
    with output as temporary:
        write(temporary)
        raise RuntimeError("crash while writing")


def test_atomic_outputs_leave_the_old_output_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        _crash_while_writing(atomic_file(target, force=True), lambda temporary: temporary.write_text("half"))
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").write_text("old")
    with pytest.raises(OutputExistsError):
        atomic_folder(folder).__enter__()
    with pytest.raises(RuntimeError):
        _crash_while_writing(
            atomic_folder(folder, force=True), lambda temporary: (temporary / "weights").write_text("half")
        )
    assert (folder / "weights").read_text() == "old"
    with atomic_folder(folder, force=True) as temporary:
        (temporary / "weights").write_text("new")
    assert (folder / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.txt"]


def test_reward_train_with_a_mistyped_local_base_fails_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    for kind in ("head", "model"):
        result = CliRunner().invoke(
            main,
            [
                "reward",
                "train",
                "--base",
                "models/bsae",
                "--data",
                str(data),
                "--out",
                str(tmp_path / f"out-{kind}"),
                "--kind",
                kind,
            ],
        )
        _one_line_error(result, "base model folder not found: models/bsae")


def test_an_import_with_an_unknown_pole_names_the_file(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with ProfileStore(db, embedder=HashingEmbedder()) as store:
        store.set_preference("alice", "tone", "formal")
        text = store.export_user("alice").to_json().replace('"formal"', '"sarcastic"')
    tampered = tmp_path / "pole.json"
    tampered.write_text(text)
    result = CliRunner().invoke(main, ["profile", "--db", str(db), "import", str(tampered), "--as", "alice2"])
    _one_line_error(result, "pole.json", "sarcastic")
