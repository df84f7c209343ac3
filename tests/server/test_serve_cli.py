"""`panda-chat serve` as a command: a mistyped --model or --db is refused in one line before the server starts, and
the logs it sets up carry no user text."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner

from panda_chat.cli import main
from panda_chat.server import WithholdErrorMessages


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


def test_served_request_errors_are_logged_without_their_message(tmp_path: Path, monkeypatch) -> None:
    """No user text in the logs: an unexpected error's message can quote the request's data (a database error
    quotes its parameters), so uvicorn's traceback of it keeps the frames and the type only."""
    monkeypatch.setattr(uvicorn, "run", lambda *_args, **_kwargs: None)
    uvicorn_errors = logging.getLogger("uvicorn.error")
    before = list(uvicorn_errors.filters)
    try:
        result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "p.db")])
        assert result.exit_code == 0, result.output
        installed = [f for f in uvicorn_errors.filters if f not in before]
        assert [type(f) for f in installed] == [WithholdErrorMessages]
        out = io.StringIO()
        logger = logging.getLogger("test.withheld")
        logger.addHandler(logging.StreamHandler(out))
        logger.addFilter(installed[0])
        quoted = "[parameters: ('alice', 'my secret question')]"
        try:
            raise ValueError(quoted)
        except ValueError as error:
            logger.error("Exception in ASGI application\n", exc_info=error)
        logged = out.getvalue()
        assert "secret" not in logged and "alice" not in logged
        assert "builtins.ValueError" in logged and "test_serve_cli.py" in logged  # where it happened: still there
    finally:
        uvicorn_errors.filters[:] = before
