"""``panda-chat reward train``: heads and models from JSONL, per-user heads from the profile store, errors."""

import json

import pytest
from click.testing import CliRunner
from test_reward_training import formality_pairs

from panda_chat.cli import main
from panda_chat.rewards.calibration import RewardModelInfo
from panda_chat.rewards.data import write_pairs
from panda_chat.rewards.heads import RewardHead
from profiles.store import ProfileStore


def test_head_training_prints_accuracy_and_json(tiny_models, tmp_path):
    data = write_pairs(formality_pairs(120), tmp_path / "pairs.jsonl")
    out = tmp_path / "formal.safetensors"
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
            str(out),
            "--val-split",
            "0.25",
            "--epochs",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "validation accuracy: " in result.output and "30 held out" in result.output
    head = RewardHead.load(out)
    assert head.config.name == "formal" and head.config.training["val_pairs"] == 30

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
            str(out),
            "--force",
            "--json",
            "--head-type",
            "mlp",
            "--epochs",
            "3",
        ],
    )
    report = json.loads(result.stdout)
    assert {"val_accuracy", "train_pairs", "val_pairs", "seconds", "out"} <= report.keys()
    assert report["train_pairs"] == 108 and report["out"] == str(out) and 0 <= report["val_accuracy"] <= 1


def test_model_training_writes_a_folder(tiny_models, tmp_path):
    data = write_pairs(formality_pairs(16), tmp_path / "pairs.jsonl")
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
            str(tmp_path / "rm"),
            "--kind",
            "model",
            "--epochs",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "model"
    assert RewardModelInfo.load(tmp_path / "rm").training["train_pairs"] == 14


def test_from_feedback_trains_and_stores_the_users_head(tiny_models, tmp_path):
    db = tmp_path / "profiles.db"
    with ProfileStore(db, embedder="hashing") as store:
        for pair in formality_pairs(40, seed=5):
            store.add_feedback("alice", prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected)
    result = CliRunner().invoke(
        main,
        [
            "reward",
            "train",
            "--base",
            str(tiny_models.base),
            "--from-feedback",
            "alice",
            "--db",
            str(db),
            "--name",
            "alice-style",
            "--epochs",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "user 'alice' reward head 'alice-style'" in result.output
    with ProfileStore(db, embedder="hashing") as store:
        (stored,) = store.reward_heads("alice")
    head = RewardHead.from_bytes(stored.data)
    assert stored.name == "alice-style" and head.config.training["train_pairs"] == 36
    assert stored.meta["val_pairs"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x.safetensors"], "exactly one of --data"),
        (["--data", "{data}"], "--out is required"),
        (["--data", "{bad}", "--out", "x.safetensors"], "line 2"),
        (["--from-feedback", "nobody", "--store", "{db}"], "nobody"),
    ],
)
def test_errors_are_one_line_and_non_zero(tiny_models, tmp_path, args, message):
    data = write_pairs(formality_pairs(4), tmp_path / "pairs.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p"}\n')
    args = [a.format(data=data, bad=bad, db=tmp_path / "p.db") for a in args]
    result = CliRunner().invoke(main, ["reward", "train", "--base", str(tiny_models.base), *args])
    assert result.exit_code != 0
    assert message in result.output


def test_reward_train_reads_the_database_from_db_or_its_environment_variable():
    shown = CliRunner().invoke(main, ["reward", "train", "--help"]).output
    assert "--db" in shown and "PANDA_CHAT_DB" in shown and "--store" not in shown  # --store: hidden old alias
    for command in (["generate"], ["eval"]):
        assert "PANDA_CHAT_EMBEDDER" in CliRunner().invoke(main, [*command, "--help"]).output
