"""Servers started by the tests (helpers for ``conftest`` and the tests): ``panda-chat serve`` in a subprocess on
127.0.0.1 (a free port), with the embedded
demo model and the fast hashing embedder, on a temporary SQLite database or $PANDA_CHAT_TEST_DATABASE_URL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240  # the machine may be busy: loading torch, the model and the store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``panda-chat`` from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", "from panda_chat.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def create_key(db: str, name: str, *users: str) -> str:
    flags = [arg for user in users for arg in ("--user", user)] or ["--all-users"]
    result = cli("key", "create", name, *flags, "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["key"]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    db: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=10) as response:
            return json.loads(response.read())

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(db: str, log: Path, *extra: str) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import torch; torch.set_num_threads(1); from panda_chat.cli import main; main()",
                "serve",
                "--db",
                db,
                "--embedder",
                "hashing",
                "--port",
                str(port),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(process, port, db, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            server.health()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not start within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
