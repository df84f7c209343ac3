"""`panda-chat serve` spoken to by the real OpenAI client, on loopback: answers, streaming, errors, auth, limits,
and concurrency (greedy answers are the same alone and batched)."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import openai
import pytest
from server_process import create_key

pytestmark = pytest.mark.slow

MODEL = "panda-chat-demo"
RATE_LIMIT = 60  # per key and minute: above what one key asks in this module (the "burst" key tests it)


@pytest.fixture(scope="module")
def server(database, server_factory):
    keys = {
        "alice": create_key(database, "alice-app", "alice", "alice2"),
        "admin": create_key(database, "backend"),
        "burst": create_key(database, "burst", "burst-user"),
        "sweep": create_key(database, "sweep"),  # the tests of odd inputs, so the admin key stays under the limit
    }
    running = server_factory(
        database, "--max-tokens", "64", "--max-body-bytes", "20000", "--requests-per-minute", str(RATE_LIMIT)
    )
    running.keys = keys
    return running


def client(server, key: str | None = None, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key or "none", max_retries=0, timeout=120, **options)


def ask(server, user: str, text: str, key: str = "admin", **options):
    return client(server, server.keys[key]).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], user=user, **options
    )


def _streamed(server, user: str, question: str, **options) -> tuple[list, str, list]:
    """A streamed completion through the openai client: its chunks, their text, and the chunks with a finish reason."""
    stream = client(server, server.keys["admin"]).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], user=user, stream=True, **options
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text, [c for c in chunks if c.choices and c.choices[0].finish_reason]


def test_an_answer_has_openai_shapes_and_says_how_it_was_personalised(server):
    response = ask(server, "alice", "How do magnets work?", key="alice", max_tokens=16)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == MODEL
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    usage = response.usage
    assert 0 < usage.completion_tokens <= 16 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    extra = response.model_extra
    assert extra["personalization"]["user_id"] == "alice" and isinstance(extra["conversation_id"], int)
    listed = client(server, server.keys["alice"]).models.list()
    assert [model.id for model in listed.data] == [MODEL]


def test_streaming_sends_the_same_answer_piece_by_piece(server):
    # two fresh users with the same single message have the same profile: the same greedy answer
    whole = ask(server, "stream-a", "Why is the sky blue?", max_tokens=24, temperature=0)
    chunks, text, finals = _streamed(
        server, "stream-b", "Why is the sky blue?", max_tokens=24, temperature=0, stream_options={"include_usage": True}
    )
    assert text == whole.choices[0].message.content
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert finals[0].model_extra["personalization"]["user_id"] == "stream-b"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # as OpenAI streams with include_usage: every other chunk says "usage": null
    assert all("usage" in chunk.model_fields_set and chunk.usage is None for chunk in chunks[:-1])


def test_stop_and_seeded_sampling(server):
    stopped = ask(server, "stop-user", "Tell me about dogs.", max_tokens=40, stop=["o"])
    assert "o" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    first = ask(server, "seed-a", "Tell me about cats.", max_tokens=20, temperature=1.0, seed=3)
    second = ask(server, "seed-b", "Tell me about cats.", max_tokens=20, temperature=1.0, seed=3)
    assert first.choices[0].message.content == second.choices[0].message.content


def test_keys_act_only_as_their_users(server):
    with pytest.raises(openai.AuthenticationError) as missing:
        client(server).models.list()
    assert missing.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client(server, server.keys["alice"][:-2] + "xx").models.list()
    with pytest.raises(openai.PermissionDeniedError) as other:
        ask(server, "bob", "hello", key="alice", max_tokens=4)
    assert other.value.body["code"] == "user_not_allowed"
    headers = {"Authorization": f"Bearer {server.keys['alice']}"}
    assert httpx.get(f"{server.base_url}/v1/profiles/bob", headers=headers).status_code == 403
    assert httpx.get(f"{server.base_url}/v1/profiles/alice", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("options", "status", "fragment"),
    [
        ({"user": " alice"}, 400, "whitespace"),
        ({"user": None}, 400, "user is missing"),
        ({"model": "gpt-4o"}, 404, "not served"),
        ({"max_tokens": 65}, 400, "at most 64"),
        ({"n": 2}, 400, "n must be 1"),
        ({"n": 0}, 400, "n must be 1"),
        # malformed tools and tool-call history are the client's error, not a 500
        ({"tools": [{"type": "function"}]}, 400, "tools.0.function"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{x"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "done"},
                ]
            },
            400,
            "arguments: Invalid JSON",
        ),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}}}, 400, "schema"),
        # numbers the database or the generator cannot hold are refused, not a 500 or a driver's message
        ({"conversation_id": 2**40}, 400, "conversation_id"),
        ({"seed": 2**64}, 400, "seed"),
    ],
)
def test_bad_requests_get_openai_errors(server, options, status, fragment):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "user": "alice",
        "max_tokens": 4,
        **options,
    }
    body = {key: value for key, value in body.items() if value is not None}
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {server.keys['admin']}"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"]


def test_request_size_limits(server):
    headers = {"Authorization": f"Bearer {server.keys['admin']}"}
    huge = {"model": MODEL, "user": "alice", "messages": [{"role": "user", "content": "word " * 5000}]}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=huge, headers=headers, timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_requests_per_minute_per_key(server):
    burst = client(server, server.keys["burst"])
    for _ in range(RATE_LIMIT):
        burst.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        burst.models.list()
    # says when to retry (the openai client waits that long rather than failing after quick retries)
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    client(server, server.keys["alice"]).models.list()  # other keys are not affected


def test_concurrent_greedy_answers_equal_their_answers_alone(server):
    questions = [
        "How do magnets work?",
        "Give me a tip for sleeping better.",
        "What is rain?",
        "Explain taxes simply.",
        "How do I learn to swim?",
        "Why do cats purr?",
    ]
    alone = [ask(server, f"alone-{i}", q, max_tokens=30).choices[0].message.content for i, q in enumerate(questions)]
    rows_before = server.health()["max_rows"]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(
            pool.map(
                lambda item: ask(server, f"together-{item[0]}", item[1], max_tokens=30).choices[0].message.content,
                enumerate(questions),
            )
        )
    assert together == alone
    assert server.health()["max_rows"] > max(rows_before, 1)  # they shared decoding steps


def test_a_client_that_goes_away_frees_its_row(server):
    cancelled = server.health()["cancelled"]
    body = {
        "model": MODEL,
        "user": "leaver",
        "stream": True,
        "max_tokens": 64,
        "temperature": 1.5,
        "seed": 1,
        "top_k": 100,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
    }
    headers = {"Authorization": f"Bearer {server.keys['admin']}"}
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        for line in response.iter_lines():
            if (
                line.startswith("data: ")
                and '"content": "' in line
                and json.loads(line[6:])["choices"][0]["delta"].get("content")
            ):
                break  # leave after the first piece of text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.health()["cancelled"] == cancelled:
        time.sleep(0.2)
    health = server.health()
    assert health["cancelled"] == cancelled + 1 and health["running_rows"] == 0


def test_json_schema_response_format_gives_parseable_json(server):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = ask(
        server,
        "json-user",
        "Name a city.",
        max_tokens=16,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )
    assert isinstance(json.loads(response.choices[0].message.content)["city"], str)


def test_a_streamed_structured_answer_is_the_one_sent_whole(server):
    """Streams that need LangChain's path (a response format, tools) send what the whole answer says."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    options = {
        "max_tokens": 24,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    }
    whole = ask(server, "json-whole", "Name a city.", **options)
    _, text, finals = _streamed(server, "json-streamed", "Name a city.", **options)
    assert text == whole.choices[0].message.content
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert finals[0].model_extra["personalization"]["user_id"] == "json-streamed"


def test_profile_endpoints_feedback_export_and_forget(server):
    ask(server, "alice2", "I love detailed physics answers.", key="alice", max_tokens=8)
    base, headers = f"{server.base_url}/v1/profiles/alice2", {"Authorization": f"Bearer {server.keys['alice']}"}
    feedback = httpx.post(
        f"{base}/feedback",
        json={"prompt": "Explain gravity", "chosen": "A precise answer", "rejected": "A vague one"},
        headers=headers,
        timeout=60,
    )
    assert feedback.status_code == 200 and isinstance(feedback.json()["feedback_id"], int)
    bad = httpx.post(f"{base}/feedback", json={"prompt": "x", "rating": 3}, headers=headers, timeout=60)
    assert bad.status_code == 400
    exported = httpx.get(f"{base}/export", headers=headers, timeout=60).json()
    assert "I love detailed physics answers." in json.dumps(exported)
    forgotten = httpx.delete(base, headers=headers, timeout=60)
    assert forgotten.status_code == 200 and forgotten.json()["deleted"]["messages"] == 2
    # forget leaves the id in no table, API keys included: the key no longer acts as the forgotten user
    gone = httpx.get(base, headers=headers, timeout=60)
    assert gone.status_code == 403


def test_optional_fields_may_be_null_and_models_can_be_retrieved(server):
    """OpenAI's schema makes n, stream and the sampling fields nullable; SDKs and UIs send explicit nulls."""
    # no max_tokens either: the default fits this server's --max-tokens 64
    body = {"model": MODEL, "user": "alice", "n": None, "stream": None, "temperature": None, "max_tokens": None}
    headers = {"Authorization": f"Bearer {server.keys['sweep']}"}
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["object"] == "chat.completion"
    assert client(server, server.keys["alice"]).models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as other:
        client(server, server.keys["alice"]).models.retrieve("gpt-4o")
    assert other.value.body["code"] == "model_not_found"
    # a route or method that does not exist is answered as OpenAI's error object too
    for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)):
        answer = httpx.request(method, f"{server.base_url}{path}", headers=headers, timeout=60)
        assert answer.status_code == status and path in answer.json()["error"]["message"]


def test_a_stream_refused_before_its_first_token_is_an_http_error(server):
    schema = {"type": "object", "properties": {"city": {"type": "banana"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        list(
            client(server, server.keys["sweep"]).chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Name a city."}],
                user="bad-schema",
                max_tokens=8,
                stream=True,
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            )
        )
    assert "schema" in refused.value.body["message"]


@pytest.mark.parametrize("user", ["team/alice", "100%", "a%2Fb", "ünï/用户"])
def test_profile_endpoints_reach_a_user_whose_id_holds_a_slash_or_a_percent(server, user):
    """Any valid user id (profiles.ids) is one escaped path segment; a key for a prefix of it ("team") is another
    user's key."""
    ask(server, user, "hello", key="sweep", max_tokens=2)
    base = f"{server.base_url}/v1/profiles/{quote(user, safe='')}"
    headers = {"Authorization": f"Bearer {server.keys['sweep']}"}
    shown = httpx.get(base, headers=headers, timeout=60)
    assert shown.status_code == 200 and shown.json()["user"] == user
    updated = httpx.put(f"{base}/preferences/verbosity", json={"pole": "concise"}, headers=headers, timeout=60)
    assert updated.json()["user"] == user
    assert httpx.get(f"{base}/export", headers=headers, timeout=60).json()["user_id"] == user
    prefix = user.split("/")[0]
    if prefix != user:
        only_prefix = create_key(server.db, f"only-{prefix}", prefix)
        assert httpx.get(base, headers={"Authorization": f"Bearer {only_prefix}"}, timeout=60).status_code == 403
    assert httpx.delete(base, headers=headers, timeout=60).json()["user_id"] == user
    assert httpx.get(base, headers=headers, timeout=60).status_code == 404


def test_another_users_conversation_is_refused_before_anything_is_decoded(server):
    """Even with the owner's own last question as the messages (which used to be decoded, and streamed, before the
    refusal: a way to confirm what another user asked), another user's conversation id is a 400 up front."""
    question = "What is my secret plan?"
    conversation = ask(server, "conv-owner", question, key="sweep", max_tokens=4).model_extra["conversation_id"]
    steps = server.health()["steps"]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="does not belong"):  # a stream too: no 200 to read
            client(server, server.keys["sweep"]).chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": question}],
                user="conv-intruder",
                max_tokens=4,
                stream=stream,
                extra_body={"conversation_id": conversation},
            )
    assert server.health()["steps"] == steps  # nothing was decoded for them


class _Leaving:
    """A request whose client is there for ``checks`` disconnect checks, then gone."""

    def __init__(self, checks: int):
        self.checks = checks

    async def is_disconnected(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_a_non_streamed_answer_whose_client_leaves_is_cancelled():
    """A non-streamed answer has nothing to send until it is done, so the server checks for its client while it
    waits; when the client has gone, the answer's task is cancelled (ChatPanda then frees the row at the next step,
    ``test_chat_model_async``) instead of decoding to the end for nobody."""
    from panda_chat.server.app import _ClientLeft, _unless_client_leaves

    async def scenario():
        cancelled = asyncio.Event()

        async def endless():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(_ClientLeft):
            await _unless_client_leaves(_Leaving(checks=2), endless(), every=0.01)
        assert cancelled.is_set()

        async def quick():
            await asyncio.sleep(0.02)
            return "the answer"

        assert await _unless_client_leaves(_Leaving(checks=1000), quick(), every=0.01) == "the answer"

    asyncio.run(scenario())
