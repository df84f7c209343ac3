"""Migrations: applied from empty on open, matching the models, idempotent, refusing newer schemas, and shipped in
a non-editable wheel."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from profiles import ProfileStore, SchemaTooNewError
from profiles.database import alembic_config
from profiles.models import Base

REPO = Path(__file__).resolve().parents[2]


def test_opening_an_empty_database_applies_every_migration(db_path: Path) -> None:
    ProfileStore(db_path, embedder="hashing").close()
    engine = create_engine(f"sqlite:///{db_path}")
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head
        # The migrated schema is exactly what the models declare (no drift between models and migrations).
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ["journal_mode"]}
    assert pragmas["journal_mode"] == "wal"


def test_reopening_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    with ProfileStore(db_path, embedder="hashing") as store:
        store.add_message("alice", "user", "hello there")
    with ProfileStore(db_path, embedder="hashing") as store:
        assert [m.text for m in store.messages("alice")] == ["hello there"]


def test_a_database_from_a_newer_schema_is_refused_with_a_clear_error(db_path: Path) -> None:
    ProfileStore(db_path, embedder="hashing").close()
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00d_from_the_future'")
    with pytest.raises(SchemaTooNewError, match="newer than this panda-chat"):
        ProfileStore(db_path, embedder="hashing")


def test_connections_enforce_foreign_keys_and_a_busy_timeout(store: ProfileStore) -> None:
    if store._engine.dialect.name != "sqlite":
        pytest.skip("SQLite's connection settings (PostgreSQL enforces foreign keys and waits on locks itself)")
    with store._engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


@pytest.mark.slow
def test_migrations_run_from_a_non_editable_wheel(tmp_path: Path) -> None:
    """Build the wheel from the project's files, install it (no deps) into a fresh venv that sees the already
    installed dependencies but not the editable checkout, and open a store from there."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy2(REPO / name, source / name)
    for name in ["panda_chat", "profiles", "migrations"]:
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        cwd=source,
        check=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Dependencies come from this interpreter's site-packages, added as a plain path: its .pth files (among them
    # the editable install's finder) are not processed, so `profiles` can only come from the wheel.
    (venv_site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("panda_chat-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(venv_site), str(wheel)], check=True
    )
    script = textwrap.dedent(
        f"""
        import profiles, pathlib
        from profiles import ProfileStore
        assert pathlib.Path(profiles.__file__).is_relative_to({str(venv_site)!r}), profiles.__file__
        with ProfileStore({str(tmp_path / "wheel.db")!r}, embedder="hashing") as store:
            store.add_message("alice", "user", "from the wheel")
            print(store.search("alice", "wheel", k=1)[0].text)
        """
    )
    clean_env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [python, "-c", script], cwd=tmp_path, env=clean_env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from the wheel"
    assert (venv_site / "migrations" / "env.py").is_file()
    assert any((venv_site / "migrations" / "versions").glob("0001_*.py"))


def test_an_in_memory_sqlalchemy_url_works_end_to_end() -> None:
    with ProfileStore("sqlite://", embedder="hashing") as store:
        assert store.index_path is None  # nothing to put a cache file next to: the index lives in memory
        store.add_message("alice", "user", "hello from memory")
        assert [h.text for h in store.search("alice", "memory")] == ["hello from memory"]
        store.forget("alice")
        assert store.list_users() == []
