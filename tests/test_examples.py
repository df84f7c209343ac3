"""Every example runs offline, as a user would run it (a subprocess), and shows what it claims to show.

Examples default to the embedded demo model; when it is not built (a fresh source checkout), they run on the tiny
test model instead (``--model``). The fast hashing embedder keeps the runs short either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def demo_model_available() -> bool:
    try:
        from panda_chat.demo import demo_model_dir

        demo_model_dir()
        return True
    except (ImportError, FileNotFoundError):
        return False


@pytest.fixture(scope="module")
def outputs(tiny_models, tmp_path_factory) -> dict[str, str]:
    """Run every example at once (separate processes: their start-up, mostly imports, overlaps)."""
    model_args = [] if demo_model_available() else ["--model", str(tiny_models.base)]
    # one thread each: the three processes run side by side on a small machine
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    running = {}
    for name in ("chain", "two_users", "agent_loop", "langgraph_memory"):
        db = tmp_path_factory.mktemp(name) / "profiles.db"
        running[name] = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / f"{name}.py"),
                *model_args,
                "--db",
                str(db),
                "--embedder",
                "hashing",
                "--max-tokens",
                "8",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = (process.returncode, stdout, stderr)
    return results


def output_of(outputs: dict, name: str) -> str:
    returncode, stdout, stderr = outputs[name]
    assert returncode == 0, stderr[-3000:]
    return stdout


def test_chain_answers_two_users_and_parses_structured_output(outputs):
    out = output_of(outputs, "chain")
    assert "--- alice ---" in out and "--- bob ---" in out
    assert "structured: Recipe(dish=" in out


def test_two_users_diverge_as_their_histories_differ(outputs):
    out = output_of(outputs, "two_users")
    assert "same answer before: True" in out  # empty profiles: identical answers
    inferred = [line for line in out.splitlines() if "inferred:" in line]
    assert "'expertise': 'elementary'" in inferred[0] and "'expertise': 'expert'" in inferred[1]
    assert "same answer after:  False" in out


def test_agent_loop_runs_tools_and_answers_two_users_in_their_styles(outputs):
    out = output_of(outputs, "agent_loop")
    assert "calculator check: 42" in out
    assert "--- carol ---" in out and "--- dan ---" in out
    assert out.count("step 1: calculate(") == 2 and out.count("        -> ") == 2
    assert "(verbosity: concise, explicit)" in out and "(verbosity: detailed, explicit)" in out


def test_langgraph_chatbot_keeps_one_thread_and_its_memories(outputs):
    out = output_of(outputs, "langgraph_memory")
    assert out.count("bot:  ") == 3
    assert (
        "memories: ['I am a physicist working on lasers', 'I love detailed explanations']" in out
        or "memories: ['I love detailed explanations', 'I am a physicist working on lasers']" in out
    )
    assert "thread turns stored: 6" in out
