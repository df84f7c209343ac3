"""``panda-chat demo`` on the shipped demo models: two users, one question, everything printed, offline."""

from __future__ import annotations

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
    assert "done in" in out
