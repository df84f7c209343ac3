"""``panda-chat lambda fit`` and ``panda-chat eval`` end to end on the tiny models; prompt files."""

import json

import pytest
from click.testing import CliRunner
from test_reward_training import formality_pairs

from panda_chat.cli import main
from panda_chat.evaluation.prompts import load_prompts
from panda_chat.lam.learned import LearnedLambda
from panda_chat.rewards.data import write_pairs


@pytest.fixture(scope="module")
def head_file(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_cli")
    data = write_pairs(formality_pairs(60), folder / "pairs.jsonl")
    out = folder / "formal.safetensors"
    result = CliRunner().invoke(
        main,
        ["reward", "train", "--base", str(tiny_models.base), "--data", str(data), "--out", str(out), "--epochs", "3"],
    )
    assert result.exit_code == 0, result.output
    return out


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    assert load_prompts(tmp_path / "p.txt").prompts == ["first prompt", "second prompt"]
    (tmp_path / "p.jsonl").write_text(
        '{"prompt": "a", "weights": {"f": 1}, "preference_features": [0.5, 1]}\n'
        '{"prompt": "b", "weights": {"f": 2}, "preference_features": [0, 0]}\n'
    )
    prompt_set = load_prompts(tmp_path / "p.jsonl")
    assert prompt_set.weights == [{"f": 1.0}, {"f": 2.0}]
    assert prompt_set.preference_features.shape == (2, 2)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "weights": {"f": 1}}\n{"prompt": "b"}\n')
    with pytest.raises(ValueError, match="on every line or on none"):
        load_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"prompt": "a"}\n{"prompt": ""}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_prompts(tmp_path / "bad2.jsonl")


def test_lambda_fit_then_eval(tiny_models, head_file, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me how the cat cooks.\nExplain the budget\nOur team builds a bicycle\n")
    common = [
        "--base",
        str(tiny_models.base),
        "--reward",
        f"formal={head_file}",
        "--prompts",
        str(prompts),
        "--max-new-tokens",
        "4",
        "--top-k",
        "5",
    ]
    lam_file = tmp_path / "lam.safetensors"
    result = CliRunner().invoke(
        main, ["lambda", "fit", *common, "--out", str(lam_file), "--starts", "0,1,3", "--decays", "1,0.9", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["out"] == str(lam_file) and report["prompts"] == 3 and report["learned_value"] is not None
    assert LearnedLambda.load(lam_file).config.training["grid"] == report["grid"]

    out_json = tmp_path / "eval.json"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            *common,
            "--methods",
            "greedy,args,panda,panda-set",
            "--lam-grid",
            "1,3",
            "--lambda-model",
            str(lam_file),
            "--embedder",
            "hashing",
            "--json-out",
            str(out_json),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| method | lambda | rep-2 |" in result.stdout and "| panda |" in result.stdout
    saved = json.loads(out_json.read_text())
    assert [r["method"] for r in saved["results"]] == ["greedy", "args", "panda", "panda-set"]

    result = CliRunner().invoke(main, ["eval", *common, "--methods", "panda"])
    assert result.exit_code != 0 and "needs a fitted lambda model" in result.output
    result = CliRunner().invoke(main, ["eval", *common, "--methods", "beam"])
    assert result.exit_code != 0 and "unknown method" in result.output


def test_zero_shot_reward_from_the_command_line(tiny_models, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about soup\n")
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--base",
            str(tiny_models.base),
            "--reward",
            "food=zero-shot:an answer about soup and cooking",
            "--embedder",
            "hashing",
            "--prompts",
            str(prompts),
            "--max-new-tokens",
            "3",
            "--top-k",
            "4",
            "--methods",
            "greedy,args",
            "--lam-grid",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][1]["lam"] == "2"
