"""``panda-chat demo`` on the shipped demo models: two users, one question, everything printed, offline."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from panda_chat.cli import main

pytestmark = pytest.mark.slow


def test_demo_shows_both_users_preferences_answers_and_rewards() -> None:
    result = CliRunner().invoke(main, ["demo", "--questions", "1", "--max-tokens", "40", "--embedder", "hashing"])
    assert result.exit_code == 0, result.output
    out = result.output
    for user in ("== ana", "== ben"):
        assert user in out
    assert "evidence" in out and "expertise" in out and "tone" in out
    assert "Q1." in out and "unguided" in out
    answer_lines = [line for line in out.splitlines() if line.startswith(("  unguided", "  ana", "  ben"))]
    assert len(answer_lines) == 3
    assert out.count("elementary ") >= 3  # a reward line under each of the three answers
    assert "measured: " in out and "personalised answers move toward" in out
    assert "done in" in out


def test_demo_json_is_one_object_of_the_documented_shape() -> None:
    result = CliRunner().invoke(
        main, ["demo", "--json", "--questions", "1", "--max-tokens", "8", "--embedder", "hashing"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # one object, nothing else on stdout
    assert set(report) == {"users", "questions", "moved_toward_inferred"}
    assert [set(user) for user in report["users"]] == [{"user_id", "inferred"}] * 2
    poles = {"elementary", "expert", "concise", "detailed", "friendly", "formal"}
    for user in report["users"]:
        assert set(user["inferred"]) <= {"expertise", "verbosity", "tone"} and set(user["inferred"].values()) <= poles
    (question,) = report["questions"]
    assert set(question) == {"question", "trained_topic", "answers"} and question["trained_topic"] is True
    assert [answer["who"] for answer in question["answers"]] == ["unguided", "ana", "ben"]
    for answer in question["answers"]:
        assert set(answer) == {"who", "text", "rewards"} and set(answer["rewards"]) == poles
        assert all(isinstance(value, float) for value in answer["rewards"].values())
    counted = report["moved_toward_inferred"]
    assert counted["of"] == 2 and 0 <= counted["answers"] <= 2
