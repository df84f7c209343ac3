"""ChatPanda on the tiny test model: LangChain behaviour, per-user steering, recording, batching, async, caching."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from panda_chat.chat_model import ChatPanda, ChatTemplateMissingError
from panda_chat.chat_model.runtime import model_runtime
from profiles import ProfileStore


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "profiles.db", embedder="hashing") as opened:
        yield opened


@pytest.fixture
def llm(tiny_models, store):
    return ChatPanda(model=str(tiny_models.base), store=store, user_id="alice", max_tokens=8, device="cpu")


@pytest.fixture
def quiet(llm):
    """Records nothing, so the profile (and the answer) stays the same from call to call."""
    return ChatPanda(**{**_params(llm), "record": False})


class TokenCollector(BaseCallbackHandler):
    def __init__(self):
        self.tokens: list[str] = []

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)


def stored_turns(store, conversation_id):
    return [(m.role, m.text) for m in store.conversation_messages(conversation_id)]


# --------------------------------------------------------------------------------------------- invoke and stream


def test_invoke_returns_text_usage_and_the_preference_context_used(llm):
    result = llm.invoke([SystemMessage("be brief"), HumanMessage("Hello")])
    assert isinstance(result, AIMessage) and result.content
    usage = result.usage_metadata
    prompt_tokens = llm.get_num_tokens_from_messages([SystemMessage("be brief"), HumanMessage("Hello")])
    assert usage == {"input_tokens": prompt_tokens, "output_tokens": 8, "total_tokens": prompt_tokens + 8}
    meta = result.response_metadata
    assert meta["model_name"] == llm.model_name and meta["finish_reason"] == "length"
    assert meta["user_id"] == "alice" and isinstance(meta["conversation_id"], int)
    personalization = meta["personalization"]
    assert personalization["mode"] == "neutral"  # a new user: nothing known yet, plain decoding
    assert set(personalization["dimensions"]) == {"expertise", "verbosity", "tone"}
    assert personalization["lambda"]["kind"] == "none (not steered)"


def test_stream_yields_the_same_text_as_invoke_and_fires_token_callbacks(quiet):
    llm = quiet
    expected = llm.invoke("Hello").content
    collector = TokenCollector()
    chunks = list(llm.stream("Hello", config={"callbacks": [collector]}))
    assert "".join(chunk.content for chunk in chunks) == expected
    assert len(chunks) > 2 and chunks[-1].chunk_position == "last"
    assert chunks[-1].usage_metadata["output_tokens"] == 8
    assert chunks[-1].response_metadata["finish_reason"] == "length"
    assert "".join(collector.tokens) == expected


def test_streaming_true_makes_invoke_stream_tokens_to_callbacks(quiet):
    collector = TokenCollector()
    streaming = ChatPanda(**{**_params(quiet), "record": False, "streaming": True})
    result = streaming.invoke("Hello", config={"callbacks": [collector]})
    assert len(collector.tokens) > 1 and "".join(collector.tokens) == result.content
    assert result.usage_metadata["output_tokens"] == 8


def test_stop_sequences_cut_the_answer(quiet):
    llm = quiet
    full = llm.invoke("Hello", max_tokens=16).content
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = llm.invoke("Hello", max_tokens=16, stop=[stop])
    assert cut.content == full[: full.index(stop)]
    assert cut.response_metadata["finish_reason"] == "stop"
    bound = ChatPanda(**{**_params(llm), "stop": [stop]}).invoke("Hello", max_tokens=16)
    assert bound.content == cut.content


def _params(llm: ChatPanda) -> dict:
    return {
        "model": llm.model_name,
        "store": llm.store,
        "user_id": llm.user_id,
        "max_tokens": llm.max_tokens,
        "device": llm.device,
    }


def test_unknown_call_arguments_are_refused(llm):
    with pytest.raises(TypeError, match="unknown call arguments: max_tokns"):
        llm.invoke("Hello", max_tokns=3)


def test_remote_api_parameters_are_accepted_and_ignored(tiny_models, store):
    llm = ChatPanda(model=str(tiny_models.base), store=store, api_key="x", timeout=3, max_retries=2)
    assert "api_key" not in llm.model_dump()


def test_model_name_alias_and_per_call_model_override(llm, tiny_models, tmp_path):
    assert ChatPanda(model_name="m").model_name == ChatPanda(model="m").model_name == "m"
    other = shutil.copytree(tiny_models.base, tmp_path / "other-model")
    result = llm.invoke("Hello", model=str(other))
    assert result.response_metadata["model_name"] == str(other)
    assert llm._get_ls_params(model="x")["ls_model_name"] == "x"


# ---------------------------------------------------------------------------------------------- users and cache


def test_user_can_be_switched_per_call_through_configurable(llm, store):
    result = llm.invoke("Hello", config={"configurable": {"user_id": "bob"}})
    assert result.response_metadata["user_id"] == "bob"
    assert [m.text for m in store.messages("bob")] == ["Hello", result.content]
    assert not store.has_user("alice")


def test_a_cache_never_serves_one_users_answer_to_another(llm, store):
    store.set_preference("alice", "tone", "formal")
    cache = InMemoryCache()
    cached = ChatPanda(**{**_params(llm), "cache": cache})
    alice = cached.invoke("Hello")
    bob = cached.invoke("Hello", config={"configurable": {"user_id": "bob"}})
    assert bob.response_metadata["user_id"] == "bob"
    assert len(cache._cache) == 2  # one entry per user
    again = cached.invoke("Hello")  # alice again: served from the cache
    assert again.content == alice.content and len(cache._cache) == 2
    carol = ChatPanda(**{**_params(llm), "user_id": "carol", "cache": cache}).invoke("Hello")
    assert carol.response_metadata["user_id"] == "carol" and len(cache._cache) == 3


def test_preferences_steer_the_answer_and_metadata_says_how(llm, store):
    store.set_preference("alice", "verbosity", "concise")
    steered = ChatPanda(**{**_params(llm), "lam": 50.0, "record": False}).invoke("Tell me about bread dough")
    plain = ChatPanda(**{**_params(llm), "lam": 50.0, "record": False, "personalize": False}).invoke(
        "Tell me about bread dough"
    )
    personalization = steered.response_metadata["personalization"]
    assert personalization["mode"] == "steered"
    assert {(s["reward"], s["weight"]) for s in personalization["steering"]} == {
        ("verbosity.concise", 1.0),
        ("verbosity.detailed", -1.0),
    }
    assert personalization["reward_kinds"] == ["zero_shot"]  # no head configured for the tiny model
    assert personalization["lambda"]["value"] == 50.0
    assert plain.response_metadata["personalization"]["mode"] == "neutral"
    assert steered.content != plain.content


# ---------------------------------------------------------------------------------------------------- recording


def test_recording_stores_each_turn_once_across_a_conversation(llm, store):
    first = llm.invoke("h1")
    conversation = first.response_metadata["conversation_id"]
    assert stored_turns(store, conversation) == [("user", "h1"), ("assistant", first.content)]
    config = {"configurable": {"conversation_id": conversation}}
    history = [HumanMessage("h1"), AIMessage(first.content), HumanMessage("h2")]
    second = llm.invoke(history, config=config)
    assert stored_turns(store, conversation) == [
        ("user", "h1"),
        ("assistant", first.content),
        ("user", "h2"),
        ("assistant", second.content),
    ]
    retry = llm.invoke(history, config=config)  # the same call again: h2 is not stored twice
    assert [text for role, text in stored_turns(store, conversation) if role == "user"] == ["h1", "h2"]
    assert stored_turns(store, conversation)[-1] == ("assistant", retry.content)


def test_record_false_stores_nothing(llm, store):
    ChatPanda(**{**_params(llm), "record": False}).invoke("secret")
    assert not store.has_user("alice")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({"top_k": 100_000}, "larger than the base model's vocabulary"),
        ({"max_tokens": 100_000}, "max_tokens is 100000, but the model reads at most"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nope"}}}},
            "cannot follow this JSON schema",
        ),
    ],
)
def test_a_request_refused_for_its_options_stores_nothing(llm, store, call, error):
    with pytest.raises(ValueError, match=error):
        llm.invoke("a question that must not be kept", **call)
    assert not store.has_user("alice")  # neither the question nor a new conversation


def test_another_users_conversation_id_is_refused_before_anything_is_read_or_decoded(llm, store):
    first = llm.invoke("my code is 4711")  # alice's conversation
    conversation = first.response_metadata["conversation_id"]
    bob = ChatPanda(**{**_params(llm), "user_id": "bob"})
    chunks = []

    def stream_alices_question() -> None:  # her own question: nothing new to store, only the read could refuse it
        config = {"configurable": {"conversation_id": conversation}}
        for chunk in bob.stream([HumanMessage("my code is 4711")], config=config):
            chunks.append(chunk)

    with pytest.raises(ValueError, match="does not belong to user 'bob'"):
        stream_alices_question()
    assert chunks == []  # nothing was decoded from alice's conversation
    assert stored_turns(store, conversation) == [("user", "my code is 4711"), ("assistant", first.content)]


def test_plain_decoding_without_recording_never_opens_the_store(tiny_models, tmp_path):
    db = tmp_path / "never-created.db"
    result = ChatPanda(
        model=str(tiny_models.base), store=str(db), record=False, personalize=False, max_tokens=3, device="cpu"
    ).invoke("Hello")
    assert result.content and result.response_metadata["personalization"]["mode"] == "neutral"
    assert not db.exists()


# ------------------------------------------------------------------------------------------------------ batching


def test_batch_is_one_padded_decode_with_per_user_rows(quiet, store, monkeypatch):
    llm = quiet
    store.set_preference("bob", "tone", "friendly")
    prompts = ["Hello", "How do magnets work?", "Hi"]
    configs = [{"configurable": {"user_id": user}} for user in ("alice", "bob", "alice")]
    singles = [llm.invoke(p, config=c).content for p, c in zip(prompts, configs, strict=False)]
    runtime = model_runtime(llm.model_name, device="cpu")
    calls = []
    original = runtime.scheduler.generate

    def spy(prompts_, **kwargs):
        calls.append((prompts_, kwargs["weights"]))
        return original(prompts_, **kwargs)

    monkeypatch.setattr(runtime.scheduler, "generate", spy)
    collector = TokenCollector()
    results = llm.batch(prompts, config=[{**c, "callbacks": [collector]} for c in configs])
    assert len(calls) == 1 and len(calls[0][0]) == 3
    weights = calls[0][1]
    assert weights[0] == weights[2] == {} and set(weights[1]) == {"tone.friendly", "tone.formal"}
    assert [r.response_metadata["user_id"] for r in results] == ["alice", "bob", "alice"]
    assert [r.content for r in results] == singles  # padding and batching change nothing
    assert "".join(collector.tokens) and all(isinstance(r, AIMessage) for r in results)


def test_max_concurrency_caps_the_rows_of_one_decode(quiet, monkeypatch):
    runtime = model_runtime(quiet.model_name, device="cpu")
    sizes = []
    original = runtime.scheduler.generate

    def spy(prompts_, **kwargs):
        sizes.append(len(prompts_))
        return original(prompts_, **kwargs)

    monkeypatch.setattr(runtime.scheduler, "generate", spy)
    results = quiet.batch(["a", "b", "c", "d", "e"], config={"max_concurrency": 2})
    assert sizes == [2, 2, 1] and len(results) == 5 and all(r.content for r in results)


def test_batch_with_return_exceptions_keeps_the_good_rows(llm):
    results = llm.batch(["Hello", [HumanMessage(content=[{"type": "image", "url": "x"}])]], return_exceptions=True)
    assert isinstance(results[0], AIMessage) and isinstance(results[1], ValueError)


@pytest.mark.asyncio
async def test_abatch_answers_every_input(llm):
    results = await llm.abatch(["Hello", "Hey"], config={"configurable": {"user_id": "bob"}})
    assert [r.response_metadata["user_id"] for r in results] == ["bob", "bob"]


# --------------------------------------------------------------------------------------------------------- async


@pytest.mark.asyncio
async def test_async_generation_does_not_block_the_event_loop(llm, monkeypatch):
    await llm.ainvoke("warm up")
    runtime = model_runtime(llm.model_name, device="cpu")
    loop_ran = threading.Event()  # set by a coroutine: only possible while the decode is off the event loop
    original = runtime.scheduler.generate

    def decode_after_the_loop_ran(prompts_, **kwargs):
        # A decode on the loop's own thread would wait here in vain: the coroutine below could never run.
        assert loop_ran.wait(timeout=60), "the event loop did not run while ainvoke was decoding"
        return original(prompts_, **kwargs)

    monkeypatch.setattr(runtime.scheduler, "generate", decode_after_the_loop_ran)

    async def mark_the_loop_free():
        await asyncio.sleep(0)
        loop_ran.set()

    ticker = asyncio.create_task(mark_the_loop_free())
    result = await llm.ainvoke("Hello", max_tokens=8)
    await ticker
    assert result.content and loop_ran.is_set()


@pytest.mark.asyncio
async def test_astream_matches_invoke(quiet):
    llm = quiet
    expected = llm.invoke("Hello").content
    chunks = [chunk async for chunk in llm.astream("Hello")]
    assert "".join(c.content for c in chunks) == expected and chunks[-1].chunk_position == "last"


# ------------------------------------------------------------------------------------------- sharing and threads


def test_many_chat_models_share_one_copy_of_the_weights(llm, tiny_models, store, monkeypatch):
    loads = []
    monkeypatch.setattr("panda_chat.chat_model.model.model_runtime", lambda *a, **k: loads.append(a))
    models = [ChatPanda(model=str(tiny_models.base), store=store, user_id=f"u{i}", device="cpu") for i in range(500)]
    assert loads == []  # constructing loads nothing: the weights load on the first call
    monkeypatch.undo()
    llm.invoke("Hello")
    models[0].invoke("Hello", max_tokens=2)
    assert model_runtime(str(tiny_models.base), device="cpu") is model_runtime(llm.model_name, device="cpu")


def test_concurrent_calls_on_one_model_are_safe(quiet):
    prompts = ["Hello", "Hey", "How are you", "Hi there"]
    expected = [quiet.invoke(p).content for p in prompts]
    results: dict[int, str] = {}

    def run(index):
        results[index] = quiet.invoke(prompts[index]).content

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(prompts))] == expected


# ----------------------------------------------------------------------------------------- tokens, tools, templates


def test_token_counts_use_the_models_own_tokenizer(llm, tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    assert llm.get_num_tokens("the cat explains quantum tunnelling") == len(
        tokenizer.encode("the cat explains quantum tunnelling", add_special_tokens=False)
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert llm.get_num_tokens_from_messages([HumanMessage("hi")]) == len(tokenizer(prompt)["input_ids"])


def test_a_model_without_chat_template_fails_clearly_unless_one_is_given(template_free_model, store):
    folder = template_free_model
    llm = ChatPanda(model=str(folder), store=store, max_tokens=3, device="cpu")
    with pytest.raises(ChatTemplateMissingError, match="no chat template"):
        llm.invoke("Hello")
    template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"
    assert ChatPanda(model=str(folder), store=store, max_tokens=3, device="cpu", chat_template=template).invoke("Hi")


# ------------------------------------------------------------------------------------------------ structured output


class Joke(BaseModel):
    setup: str
    punchline: str
    rating: int


def test_structured_output_returns_a_schema_instance(llm):
    joke = llm.with_structured_output(Joke).invoke("Tell me a joke about cats.")
    assert isinstance(joke, Joke)
    streamed = list(llm.with_structured_output(Joke.model_json_schema()).stream("Tell me a joke about cats."))
    assert set(streamed[-1]) == {"setup", "punchline", "rating"}
    assert streamed[-1] == joke.model_dump()  # greedy: the same JSON either way


def test_structured_output_include_raw_and_json_mode(llm):
    out = llm.with_structured_output(Joke, include_raw=True).invoke("joke")
    assert isinstance(out["raw"], AIMessage) and isinstance(out["parsed"], Joke) and out["parsing_error"] is None
    assert json.loads(out["raw"].content) == out["parsed"].model_dump()
    free = llm.with_structured_output(None, method="json_mode").invoke("Describe a cat as JSON.")
    assert isinstance(free, dict)


def test_structured_output_records_the_question_not_the_schema_instruction(llm, store):
    llm.with_structured_output(Joke).invoke("Tell me a joke")
    assert [m.text for m in store.messages("alice") if m.role == "user"] == ["Tell me a joke"]


# ------------------------------------------------------------------------------------- LangChain idioms and fallbacks


def test_configurable_fields_switch_the_user_too(llm):
    from langchain_core.runnables import ConfigurableField

    configurable = llm.configurable_fields(user_id=ConfigurableField(id="user_id"))
    result = configurable.invoke("Hello", config={"configurable": {"user_id": "dave"}})
    assert result.response_metadata["user_id"] == "dave"


def test_a_reward_that_does_not_fit_the_model_falls_back_and_metadata_says_so(tiny_models, tmp_path):
    from profiles import PreferenceCatalog, RewardSpec

    default = PreferenceCatalog.default()
    tone = default.dimension("tone")
    formal = tone.pole("formal").model_copy(update={"reward": RewardSpec(kind="head", path=str(tmp_path / "x.st"))})
    catalog = default.merged([tone.model_copy(update={"poles": [tone.pole("friendly"), formal]})])
    with ProfileStore(tmp_path / "p.db", embedder="hashing", catalog=catalog) as store:
        store.set_preference("erin", "tone", "formal")
        llm = ChatPanda(model=str(tiny_models.base), store=store, user_id="erin", max_tokens=4, device="cpu")
        with pytest.warns(RuntimeWarning, match="falls back to its zero-shot reward"):
            result = llm.invoke("Hello")
    steering = {s["reward"]: s for s in result.response_metadata["personalization"]["steering"]}
    assert steering["tone.formal"]["kind"] == "zero_shot"
    assert "does not fit this model" in steering["tone.formal"]["note"]
    assert result.content


def test_without_a_model_the_embedded_demo_model_steers_with_its_own_heads_and_lambda(store):
    from panda_chat.demo import demo_model_dir

    store.set_preference("alice", "expertise", "elementary")
    llm = ChatPanda(store=store, user_id="alice", max_tokens=12, device="cpu", record=False)
    result = llm.invoke("How does a bicycle stay upright?")
    assert result.response_metadata["model_name"] == str(demo_model_dir())
    personalization = result.response_metadata["personalization"]
    assert personalization["reward_kinds"] == ["head"]
    assert personalization["lambda"]["kind"].startswith("learned")
    assert personalization["lambda"]["min"] >= 0 and result.content
