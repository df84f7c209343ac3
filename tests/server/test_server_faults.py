"""Several servers on one database, and servers that die: no write is lost, a preference set through one server
steers the next answer from another, kill -9 mid-stream leaves no half-written turn, and a restart serves on."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server_process import create_key

from profiles import ProfileStore

pytestmark = pytest.mark.slow

MODEL = "panda-chat-demo"
# A sampled answer long enough to still be decoding when the test acts on its first piece.
LONG = {
    "temperature": 1.5,
    "seed": 1,
    "top_k": 100,
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
}


@pytest.fixture(scope="module")
def pair(database, server_factory):
    key = create_key(database, "backend")
    first, second = server_factory(database), server_factory(database)
    return first, second, {"Authorization": f"Bearer {key}"}


def chat(server, headers, user: str, text: str, **options) -> dict:
    body = {"model": MODEL, "user": user, "max_tokens": 12, "messages": [{"role": "user", "content": text}], **options}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_preference_set_through_one_server_steers_the_next_answer_from_the_other(pair):
    first, second, headers = pair
    chat(second, headers, "dave", "Hello!")
    response = httpx.put(
        f"{first.base_url}/v1/profiles/dave/preferences/tone", json={"pole": "formal"}, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    tone = chat(second, headers, "dave", "How are you?")["personalization"]["dimensions"]["tone"]
    assert tone["source"] == "explicit" and tone["top_pole"] == "formal"
    shown = httpx.get(f"{second.base_url}/v1/profiles/dave", headers=headers, timeout=60).json()
    assert shown["explicit"] == {"tone": "formal"}


def test_two_servers_writing_for_one_user_lose_nothing(pair, database):
    first, second, headers = pair
    asks = [(first if i % 2 else second, f"question number {i}") for i in range(6)]
    with ThreadPoolExecutor(len(asks)) as pool:
        answers = list(pool.map(lambda item: chat(item[0], headers, "erin", item[1]), asks))
    with ProfileStore(database, embedder="hashing") as store:
        stored = store.messages("erin")
    assert sorted(m.text for m in stored if m.role == "user") == sorted(text for _, text in asks)
    assert sorted(m.text for m in stored if m.role == "assistant") == sorted(
        a["choices"][0]["message"]["content"] for a in answers
    )


def _running(pid: int) -> bool:
    """Whether process ``pid`` is alive (a zombie waiting to be reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_mid_stream_leaves_no_half_written_turn_and_a_restart_serves_on(pair, database, server_factory):
    first, _, headers = pair
    engine = first.health()["engine"]
    assert engine["kind"] == "process" and engine["pid"] != first.process.pid
    body = {"model": MODEL, "user": "frank", "stream": True, **LONG}
    with httpx.stream(
        "POST", f"{first.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("choices", [{}])[0].get("delta", {}).get(
                "content"
            ):
                first.kill()  # mid-answer: the server dies with the answer half decoded
                break
    with ProfileStore(database, embedder="hashing") as store:
        stored = store.messages("frank")
    assert [m.role for m in stored] == ["user"]  # the question is kept; no partial answer was written
    deadline = time.monotonic() + 60
    while _running(engine["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(engine["pid"])  # the server's engine process went with it
    restarted = server_factory(database)
    answer = chat(restarted, headers, "frank", "Are you back?")
    assert answer["choices"][0]["message"]["content"]
    with ProfileStore(database, embedder="hashing") as store:
        assert [m.role for m in store.messages("frank")] == ["user", "user", "assistant"]


def test_the_thread_engine_serves_the_same_greedy_answers_as_the_engine_process(pair, database, server_factory):
    _, second, headers = pair  # (the first one was killed above)
    threaded = server_factory(database, "--engine", "thread")
    assert threaded.health()["engine"] == {"kind": "thread", "pid": threaded.process.pid}
    question = "How do magnets work?"
    answers = [
        chat(server, headers, f"gina-{n}", question, max_tokens=24) for n, server in enumerate((second, threaded))
    ]
    assert answers[0]["choices"][0]["message"]["content"] == answers[1]["choices"][0]["message"]["content"]
