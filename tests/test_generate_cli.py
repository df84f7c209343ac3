"""``panda-chat generate``: the same decoding as the Python API, text or JSON out, one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_decoding import make_head

from panda_chat.cli import main
from panda_chat.decoding import PandaDecoder
from panda_chat.prompt_format import question_prompt

PROMPT = "A student compares linear algebra"


@pytest.fixture(scope="module")
def head_file(tiny_models, tmp_path_factory):
    decoder = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    return make_head(decoder.model).save(tmp_path_factory.mktemp("heads") / "formal.safetensors")


def run(*args, stdin=None):
    return CliRunner().invoke(main, ["generate", *map(str, args)], input=stdin)


def test_json_output_matches_the_python_api(tiny_models, head_file):
    args = [
        "--base",
        tiny_models.base,
        "--reward",
        f"formal={head_file}",
        "--reward",
        f"helpful={tiny_models.reward_model}",
        "--weight",
        "formal=1",
        "--weight",
        "helpful=0.5",
        "--lam",
        "2",
        "--top-k",
        "8",
        "--max-new-tokens",
        "12",
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    result = run(PROMPT, *args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    decoder = PandaDecoder.from_pretrained(
        tiny_models.base,
        rewards={"formal": str(head_file), "helpful": str(tiny_models.reward_model)},
        device="cpu",
        dtype="float32",
    )
    # the prompt is a user message: wrapped in the model's chat template, as ChatPanda wraps one
    (expected,) = decoder.generate(
        question_prompt(decoder.tokenizer, PROMPT),
        weights={"formal": 1.0, "helpful": 0.5},
        lam=2.0,
        top_k=8,
        max_new_tokens=12,
    )
    assert data["token_ids"] == expected.token_ids and data["text"] == expected.text
    assert data["rewards"] == pytest.approx(expected.rewards, abs=1e-5)
    assert set(data["raw_rewards"]) == {"formal", "helpful"} and data["lambdas"] == [2.0] * len(data["token_ids"])
    assert data["usage"]["completion_tokens"] == len(expected.token_ids)
    assert data["usage"]["prompt_tokens"] == expected.prompt_tokens
    assert data["timing"]["tokens_per_s"] > 0 and data["finish_reason"] in ("eos", "length")

    # Text mode prints the same answer (streamed), and the prompt may come from stdin.
    text = run(*args, stdin=PROMPT)
    assert text.exit_code == 0, text.output
    assert text.stdout == expected.text + "\n"


def test_raw_feeds_plain_text_and_zero_shot_rewards_are_accepted(tiny_models, head_file):
    args = [PROMPT, "--base", tiny_models.base, "--max-new-tokens", "6", "--device", "cpu", "--json"]
    raw = run(*args, "--raw", "--reward", f"formal={head_file}")
    assert raw.exit_code == 0, raw.output
    decoder = PandaDecoder.from_pretrained(tiny_models.base, rewards={"formal": str(head_file)}, device="cpu")
    (expected,) = decoder.generate(PROMPT, max_new_tokens=6)
    assert json.loads(raw.stdout)["token_ids"] == expected.token_ids
    assert json.loads(raw.stdout)["settings"]["chat_template"] is False
    zero_shot = run(*args, "--reward", "simple=zero-shot:A simple answer for a beginner.", "--embedder", "hashing")
    assert zero_shot.exit_code == 0, zero_shot.output
    assert set(json.loads(zero_shot.stdout)["raw_rewards"]) == {"simple"}


def test_sampling_with_a_seed_is_reproducible(tiny_models, head_file):
    args = [
        PROMPT,
        "--base",
        tiny_models.base,
        "--reward",
        f"formal={head_file}",
        "--sample",
        "--seed",
        "5",
        "--temperature",
        "1.3",
        "--max-new-tokens",
        "10",
        "--device",
        "cpu",
        "--json",
    ]
    first, again = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["token_ids"] == json.loads(again.stdout)["token_ids"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reward", "formal"], "expected NAME=VALUE"),
        (["--weight", "formal=lots"], "must be a number"),
        (["--weight", "nope=1"], "unknown reward 'nope'"),
        (["--top-k", "100000"], "larger than the base model's vocabulary"),
        (["--lam", "-1"], "lambda must be >= 0"),
    ],
)
def test_errors_are_one_line_on_stderr_with_a_nonzero_exit(tiny_models, head_file, extra, message):
    args = [PROMPT, "--base", tiny_models.base, "--device", "cpu", "--max-new-tokens", "2"]
    if extra[0] != "--reward":
        args += ["--reward", f"formal={head_file}"]
    result = run(*args, *extra)
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip().startswith("Error")]) == 1


def test_missing_base_folder_and_empty_prompt(tmp_path):
    missing = run(PROMPT, "--base", tmp_path / "nothing-here", "--device", "cpu")
    assert missing.exit_code != 0 and "nothing-here" in missing.stderr and "Traceback" not in missing.stderr
    empty = run("--base", tmp_path, stdin="   ")
    assert empty.exit_code != 0 and "prompt is empty" in empty.stderr


def test_a_model_without_a_chat_template_gets_plain_text_with_a_note(tiny_models, template_free_model):
    args = [PROMPT, "--base", template_free_model, "--max-new-tokens", "4", "--device", "cpu", "--json"]
    plain = run(*args)
    assert plain.exit_code == 0, plain.output
    assert "has no chat template" in plain.stderr and "--raw" in plain.stderr
    assert json.loads(plain.stdout)["token_ids"] == json.loads(run(*args, "--raw").stdout)["token_ids"]
    templated = run(PROMPT, "--base", tiny_models.base, "--max-new-tokens", "4", "--device", "cpu")
    assert templated.exit_code == 0 and "chat template" not in templated.stderr
