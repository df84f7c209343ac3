"""Inputs are bounded: prompts against the model's context (a clear error, or the oldest chat turns dropped), a
maximum message size in the store, numeric options and ratings checked the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from transformers import AutoTokenizer

from panda_chat.chat_model.context_window import fit_turns
from panda_chat.chat_model.messages import Turn
from panda_chat.cli import main
from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.limits import PromptTooLongError, check_prompt_lengths
from panda_chat.positions import context_length
from panda_chat.tiny_models import build_causal_lm
from profiles import HashingEmbedder, ImportFormatError, InvalidInputError, ProfileStore, parse_history

POSITIONS = 96


@pytest.fixture(scope="module")
def short_model(tiny_models, tmp_path_factory) -> Path:
    """The tiny base model, with a context of only 96 positions."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    return build_causal_lm(tmp_path_factory.mktemp("short") / "base", tokenizer, max_position_embeddings=POSITIONS)


def test_the_length_check_counts_the_answer_too() -> None:
    check_prompt_lengths([10, 80], max_new_tokens=16, limit=96)
    with pytest.raises(PromptTooLongError, match=r"prompt 1 has 81 tokens .* at most 96 positions.*at most 80"):
        check_prompt_lengths([10, 81], max_new_tokens=16, limit=96)
    check_prompt_lengths([10**6], max_new_tokens=16, limit=None)


def test_a_prompt_longer_than_the_context_is_refused_before_decoding(short_model: Path) -> None:
    decoder = PandaDecoder.from_pretrained(short_model, device="cpu")
    assert context_length(decoder.model) == POSITIONS
    with pytest.raises(PromptTooLongError, match="at most 96 positions"):
        decoder.generate("word " * 500, max_new_tokens=4)
    (output,) = decoder.generate("a short prompt", max_new_tokens=4)
    assert output.completion_tokens >= 1


def test_generate_cli_says_the_prompt_is_too_long(short_model: Path) -> None:
    result = CliRunner().invoke(
        main, ["generate", "word " * 500, "--base", str(short_model), "--device", "cpu", "--max-new-tokens", "4"]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: prompt 0 has")


def _render(turns: list[Turn]) -> str:
    return "".join(f"<{turn.role}>{turn.content}" for turn in turns)


def test_fit_turns_drops_the_oldest_turns_and_keeps_the_system_message() -> None:
    turns = [
        Turn("system", "be kind"),
        Turn("user", "q1 " * 20),
        Turn("assistant", "a1 " * 20),
        Turn("user", "q2"),
        Turn("assistant", "a2"),
        Turn("user", "q3"),
    ]
    prompt, dropped = fit_turns(turns, _render, lambda text: len(text.split()), budget=10)
    assert dropped == 2 and prompt == _render([turns[0], *turns[3:]])
    assert fit_turns(turns, _render, lambda text: len(text.split()), budget=None) == (_render(turns), 0)
    # the newest turn alone is too long: the prompt is returned whole, for the decoder to refuse clearly
    assert fit_turns(turns, _render, lambda text: len(text.split()), budget=1) == (_render(turns), 0)


def test_chat_model_drops_old_turns_with_a_note(short_model: Path, tmp_path: Path) -> None:
    from panda_chat.chat_model import ChatPanda

    llm = ChatPanda(
        model=str(short_model),
        store=tmp_path / "p.db",
        user_id="alice",
        max_tokens=4,
        device="cpu",
        record=False,
        personalize=False,
    )
    history = [SystemMessage("Answer briefly.")]
    for index in range(8):
        history += [HumanMessage(f"question number {index} about bread dough"), AIMessage("it rises " * 4)]
    result = llm.invoke([*history, HumanMessage("and now?")])
    context = result.response_metadata["context"]
    assert context["dropped_turns"] >= 2 and "oldest" in context["note"]
    assert result.usage_metadata["input_tokens"] + 4 <= POSITIONS
    short = llm.invoke([SystemMessage("Answer briefly."), HumanMessage("hi")])
    assert "context" not in short.response_metadata


def test_the_store_refuses_a_message_over_its_size_limit(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "p.db", embedder=HashingEmbedder(), max_message_chars=100) as store:
        with pytest.raises(InvalidInputError, match=r"message is 101 characters long; .* at most 100"):
            store.add_message("alice", "user", "x" * 101)
        with pytest.raises(InvalidInputError, match="response is 101 characters"):
            store.add_feedback("alice", prompt="p", response="x" * 101, rating=1)
        assert not store.has_user("alice")
        store.add_message("alice", "user", "x" * 100)
    with pytest.raises(ImportFormatError, match=r"big\.jsonl, line 2: text is 101 characters"):
        parse_history(
            ['{"role": "user", "text": "ok"}', '{"role": "user", "text": "' + "y" * 101 + '"}'],
            source="big.jsonl",
            max_chars=100,
        )


def test_a_rating_out_of_range_is_refused_by_the_api_the_cli_and_an_import(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with ProfileStore(db, embedder=HashingEmbedder()) as store:
        store.add_message("alice", "user", "hello")
        with pytest.raises(InvalidInputError, match=r"rating 50(\.0)? is out of range"):
            store.add_feedback("alice", prompt="p", response="r", rating=50)
        store.add_feedback("alice", prompt="p", response="r", rating=1)
        exported = store.export_user("alice").to_json()
    result = CliRunner().invoke(
        main,
        [
            "profile",
            "--db",
            str(db),
            "--embedder",
            "hashing",
            "feedback",
            "alice",
            "--prompt",
            "p",
            "--response",
            "r",
            "--rating",
            "50",
        ],
    )
    assert result.exit_code == 1 and "is out of range" in result.output
    tampered = tmp_path / "tampered.json"
    tampered.write_text(exported.replace('"rating": 1.0', '"rating": 50.0'))
    result = CliRunner().invoke(
        main, ["profile", "--db", str(db), "--embedder", "hashing", "import", str(tampered), "--as", "alice2"]
    )
    assert result.exit_code == 1 and "tampered.json, line" in result.output and "out of range" in result.output


@pytest.mark.parametrize(
    "arguments",
    [["context", "alice", "q", "-k", "0"], ["show", "alice", "--evidence", "-1"], ["forget", "alice", "--wait", "-1"]],
)
def test_numeric_options_are_checked(tmp_path: Path, arguments: list[str]) -> None:
    result = CliRunner().invoke(main, ["profile", "--db", str(tmp_path / "p.db"), *arguments])
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_profile_log_reads_long_text_from_stdin(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    runner = CliRunner()
    assert runner.invoke(main, ["profile", "--db", str(db), "create", "alice"]).exit_code == 0
    text = "a long pasted text " * 2000
    result = runner.invoke(main, ["profile", "--db", str(db), "--embedder", "hashing", "log", "alice", "-"], input=text)
    assert result.exit_code == 0, result.output
    with ProfileStore(db, embedder=HashingEmbedder()) as store:
        assert [m.text for m in store.messages("alice")] == [text]


def test_the_server_validates_feedback_with_the_same_model() -> None:
    from pydantic import ValidationError

    from panda_chat.server.schemas import FeedbackRequest

    with pytest.raises(ValidationError, match="less than or equal to 1"):
        FeedbackRequest(prompt="p", response="r", rating=50)
    with pytest.raises(ValidationError, match="either a rating"):
        FeedbackRequest(prompt="p", response="r")
    assert FeedbackRequest(prompt="p", chosen="a", rejected="b").is_pair
