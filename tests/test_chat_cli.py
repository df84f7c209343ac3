"""``panda-chat chat``: the REPL streams answers, records them, explains them, and takes feedback."""

from __future__ import annotations

from click.testing import CliRunner

from panda_chat.cli import main
from profiles import ProfileStore


def run_chat(tiny_models, db, lines: list[str], *extra: str):
    args = [
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
        "6",
        "--device",
        "cpu",
        *extra,
    ]
    return CliRunner().invoke(main, args, input="".join(line + "\n" for line in lines))


def test_a_conversation_is_streamed_recorded_and_explained(tiny_models, tmp_path):
    db = tmp_path / "profiles.db"
    result = run_chat(tiny_models, db, ["Explain it simply please, I am new to this", "and more?", "/why", "/quit"])
    assert result.exit_code == 0, result.output
    assert result.output.count("panda> ") == 2
    assert "user alice:" in result.output and "expertise:" in result.output  # /why
    with ProfileStore(db, embedder="hashing") as store:
        messages = store.messages("alice")
        assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
        assert len({m.conversation_id for m in messages}) == 1  # both turns in one conversation
        answer = messages[1].text
    assert f"panda> {answer}" in result.output


def test_feedback_commands_store_ratings_and_preference_pairs(tiny_models, tmp_path):
    db = tmp_path / "profiles.db"
    result = run_chat(tiny_models, db, ["Hello", "/good", "/prefer 1", "/prefer", "/prefer 2", "/bad"])
    assert result.exit_code == 0, result.output
    assert "no alternatives yet" in result.output
    assert "[1] " in result.output and "[2] " in result.output
    assert "you prefer answer 2" in result.output
    with ProfileStore(db, embedder="hashing") as store:
        pairs = store.feedback_pairs("alice")
    assert len(pairs) >= 1 and pairs[0].prompt == "Hello"
    assert any(p.chosen != p.rejected for p in pairs)


def test_reset_starts_a_new_conversation_and_no_record_stores_nothing(tiny_models, tmp_path):
    db = tmp_path / "profiles.db"
    result = run_chat(tiny_models, db, ["Hello", "/reset", "Hi again"])
    assert result.exit_code == 0, result.output
    with ProfileStore(db, embedder="hashing") as store:
        assert len({m.conversation_id for m in store.messages("alice")}) == 2
    quiet_db = tmp_path / "quiet.db"
    assert run_chat(tiny_models, quiet_db, ["Hello"], "--no-record").exit_code == 0
    with ProfileStore(quiet_db, embedder="hashing") as store:
        assert not store.has_user("alice")


def test_a_wrong_model_folder_is_one_line_error(tiny_models, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "chat",
            "--user",
            "a",
            "--model",
            str(tmp_path / "nope"),
            "--db",
            str(tmp_path / "p.db"),
            "--embedder",
            "hashing",
        ],
        input="hi\n",
    )
    assert result.exit_code != 0
    assert "Error:" in result.output and "Traceback" not in result.output


def test_train_makes_the_users_own_head_from_their_preferences_and_it_steers(tiny_models, tmp_path):
    db = tmp_path / "profiles.db"
    lines = ["Hello", "/train"]
    for _ in range(4):
        lines += ["/prefer", "/prefer 1"]
    lines += ["/train", "Hello again", "/quit"]
    result = run_chat(tiny_models, db, lines)
    assert result.exit_code == 0, result.output
    assert "your head needs 4 feedback pairs, you have 0" in result.output
    assert "your reward head is trained on" in result.output
    with ProfileStore(db, embedder="hashing") as store:
        assert [head.name for head in store.reward_heads("alice")] == ["feedback"]
    last_steering = [line for line in result.output.splitlines() if line.strip().startswith("(")][-1]
    assert "feedback (user, " in last_steering  # the user's own head steers the answer after /train


def test_a_model_without_a_chat_template_is_refused_before_the_first_question(template_free_model, tmp_path):
    args = [
        "chat",
        "--user",
        "a",
        "--model",
        str(template_free_model),
        "--db",
        str(tmp_path / "p.db"),
        "--embedder",
        "hashing",
    ]
    result = CliRunner().invoke(main, args, input="hi\n")
    assert result.exit_code != 0
    assert "no chat template" in result.stderr and "Traceback" not in result.output
    assert "you>" not in result.output  # refused at start, not turn after turn


class _Answers:
    """Stands in for ChatPanda in a ChatSession: answers with the given texts, in turn."""

    def __init__(self, *texts: str):
        self.texts = list(texts)

    def model_copy(self, update=None):
        return self

    def invoke(self, messages, config=None, **kwargs):
        from langchain_core.messages import AIMessage

        return AIMessage(self.texts.pop(0))


def test_an_empty_answer_is_not_rated_nor_offered_as_a_choice(tmp_path, capsys):
    from langchain_core.messages import AIMessage, HumanMessage

    from panda_chat.cli.chat import ChatSession, handle

    with ProfileStore(tmp_path / "p.db", embedder="hashing") as store:
        session = ChatSession(llm=_Answers("", "an answer", "same", "same"), store=store, user="u")
        session.history = [HumanMessage("Hello"), AIMessage("")]
        for line in ["/good", "/prefer", "/prefer 1", "/prefer", "/prefer 2"]:
            assert handle(session, line)  # a small model's empty answer once failed these turns
        out = capsys.readouterr().out
        assert "the last answer is empty: nothing to rate" in out
        assert out.count("nothing to compare") == 2 and "no alternatives yet" in out
        assert not store.has_user("u")  # no feedback was stored, so the user was never created
