"""Start or stop the PostgreSQL server (with pgvector) the CI's store and server tests run against.

``python3 .ci/postgres.py start DIR`` prints a SQLAlchemy URL for a server whose data lives in DIR; ``stop DIR``
stops it. The ``pgserver`` wheel bundles PostgreSQL and pgvector (and runs as root: it starts the server as an
unprivileged user itself); when it is not installable, Debian's ``postgresql`` with ``postgresql-*-pgvector`` is
used, run as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from pathlib import Path


def _pgserver_start(data: Path) -> str:
    import pgserver

    server = pgserver.get_server(data, cleanup_mode=None)  # keeps running after this script exits
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)


def _debian_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql", "postgresql-common"], check=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        version = Path(found[-1]).parts[4]
        subprocess.run(["apt-get", "install", "-y", "-q", f"postgresql-{version}-pgvector"], check=True)
    return Path(found[-1]).parent


def _as_postgres(*command: str) -> None:
    subprocess.run(["su", "postgres", "-c", " ".join(command)], check=True)


def _debian_start(data: Path) -> str:
    bin_dir = _debian_bin()
    data.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, "postgres", "postgres")
    _as_postgres(str(bin_dir / "initdb"), "-D", str(data / "pg"), "-A", "trust", "-U", "postgres")
    _as_postgres(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data / "pg"),
        "-l",
        str(data / "log"),
        "-w",
        "-o",
        f"'-k {data} -c listen_addresses='",
        "start",
    )
    _as_postgres(
        str(bin_dir / "psql"), "-h", str(data), "-U", "postgres", "-c", "'CREATE EXTENSION IF NOT EXISTS vector'"
    )
    return f"postgresql+psycopg://postgres@/postgres?host={data}"


def start(data: Path) -> str:
    data.parent.mkdir(parents=True, exist_ok=True)  # pgserver wants the folder above its data directory to exist
    try:
        return _pgserver_start(data)
    except Exception as error:  # noqa: BLE001 - any failure: try the Debian packages
        print(f"pgserver failed ({error}); using Debian's postgresql", file=sys.stderr)
        return _debian_start(data)


def stop(data: Path) -> None:
    try:
        import pgserver

        pgserver.get_server(data, cleanup_mode="stop").cleanup()
    except Exception:  # noqa: BLE001
        bin_dir = _debian_bin()
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data / "pg"), "-m", "fast", "stop")


if __name__ == "__main__":
    action, folder = sys.argv[1], Path(sys.argv[2]).resolve()
    if action == "start":
        print(start(folder))
    else:
        stop(folder)
