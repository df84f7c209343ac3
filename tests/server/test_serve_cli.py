"""`panda-chat serve` refuses a mistyped --model or --db at once, in one line, before the server starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner

from panda_chat.cli import main


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("--model", "model folder not found"),
        ("--db", "connection"),  # a PostgreSQL socket where no server listens
    ],
)
def test_serve_refuses_a_bad_model_or_database_in_one_line(tmp_path: Path, monkeypatch, option, fragment) -> None:
    def started(*_args, **_kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", started)
    options = {"--db": str(tmp_path / "p.db")}
    options[option] = {
        "--model": str(tmp_path / "no-such-model"),
        "--db": f"postgresql+psycopg://postgres:@/postgres?host={tmp_path / 'no-server'}",
    }[option]
    result = CliRunner().invoke(main, ["serve", *(part for pair in options.items() for part in pair)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0]
