"""Tool calling: bind_tools and tool_choice, calls that always validate, history rendered back, agent loops."""

from __future__ import annotations

import warnings

import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from panda_chat.chat_model import ChatPanda
from panda_chat.chat_model.messages import to_turns
from panda_chat.chat_model.tools import ToolFormat, openai_tools
from profiles import ProfileStore


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Booking(BaseModel):
    """Book a table."""

    guests: int = Field(ge=1, le=8)
    day: str = Field(pattern=r"^(mon|tue|wed|thu|fri|sat|sun)$")
    note: str | None = Field(default=None, max_length=10)


@tool(args_schema=Booking)
def book(guests: int, day: str, note: str | None = None) -> str:
    """Book a table."""
    return f"booked for {guests} on {day}"


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "profiles.db", embedder="hashing") as opened:
        yield opened


@pytest.fixture
def llm(tiny_models, store):
    return ChatPanda(model=str(tiny_models.base), store=store, user_id="kim", max_tokens=6, device="cpu")


def test_any_and_a_named_choice_always_call_with_arguments_that_validate(llm):
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in openai_tools([add, book])}
    for seed in range(3):
        message = llm.bind_tools([add, book], tool_choice="any").invoke("Book for 3 on fri", temperature=1.0, seed=seed)
        (call,) = message.tool_calls
        assert call["name"] in schemas and call["id"].startswith("call_") and message.content == ""
        jsonschema.validate(call["args"], schemas[call["name"]])
    named = llm.bind_tools([add, book], tool_choice="book").invoke("hello")
    assert named.tool_calls[0]["name"] == "book"
    Booking.model_validate(named.tool_calls[0]["args"])
    required = llm.bind_tools([add], tool_choice="required").invoke("hi")
    assert required.tool_calls[0]["name"] == "add"


def test_arguments_copy_what_the_user_wrote(llm):
    message = llm.bind_tools([add], tool_choice="add").invoke("Please add 17 and 25.")
    assert set(message.tool_calls[0]["args"].values()) <= {17, 25}  # which number goes where is the model's call


def test_none_never_calls_and_auto_follows_the_likelihood(llm):
    none = llm.bind_tools([add], tool_choice="none").invoke("What is 2 plus 3?")
    assert none.tool_calls == [] and none.content
    auto = llm.bind_tools([add]).invoke("What is 2 plus 3?")  # a random model never prefers the call's first token
    assert auto.tool_calls == []
    eager = llm.model_copy(update={"call_bias": 100.0}).bind_tools([add]).invoke("What is 2 plus 3?")
    assert eager.tool_calls and eager.tool_calls[0]["name"] == "add"


def test_a_bad_tool_choice_fails_at_bind_time(llm):
    with pytest.raises(ValueError, match=r"tool_choice must be.*add"):
        llm.bind_tools([add], tool_choice="subtract")


def test_calls_and_results_are_rendered_back_into_the_prompt(llm):
    call = {"name": "add", "args": {"a": 2, "b": 49}, "id": "call_1"}
    history = [
        HumanMessage("What is 2 plus 49?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("51", tool_call_id="call_1"),
    ]
    options = llm._options(None, {"tools": openai_tools([add])})
    prompt = llm._render(to_turns(history), llm._runtime(options), options)
    assert '{"name": "add", "arguments": {"a": 2, "b": 49}}' in prompt
    assert "51" in prompt and "You can call these tools" in prompt and '"add"' in prompt
    assert "You can call these tools" not in llm._render(
        to_turns(history), llm._runtime(options), llm._options(None, {})
    )


QWEN_LIKE = (
    "{% if tools %}<|system|>Tools: {% for t in tools %}{{ t['function']['name'] }} {% endfor %}<|end|>{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' and m.get('tool_calls') %}<|assistant|>{% for c in m['tool_calls'] %}"
    "<tool_call>{\"name\": \"{{ c['function']['name'] }}\", \"arguments\": {{ c['function']['arguments'] | tojson }}}"
    "</tool_call>{% endfor %}<|end|>"
    "{% elif m['role'] == 'tool' %}<|user|><tool_response>{{ m['content'] }}</tool_response><|end|>"
    "{% else %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_a_template_with_tool_support_renders_tools_calls_and_results_itself(llm):
    native = llm.model_copy(update={"chat_template": QWEN_LIKE})
    runtime = native._runtime(native._options(None, {}))
    found = ToolFormat.of(runtime.tokenizer, QWEN_LIKE)
    assert (found.template_tools, found.template_calls, found.template_results) == (True, True, True)
    assert found.opening == "<tool_call>" and found.separators["key_separator"] == ": "
    message = native.bind_tools([add], tool_choice="any").invoke("Add 4 and 5")
    assert set(message.tool_calls[0]["args"].values()) <= {4, 5}
    options = native._options(None, {"tools": openai_tools([add])})
    prompt = native._render(
        to_turns([HumanMessage("Add 4 and 5"), message, ToolMessage("9", tool_call_id=message.tool_calls[0]["id"])]),
        runtime,
        options,
    )
    assert prompt.startswith("<|system|>Tools: add")
    args = message.tool_calls[0]["args"]
    assert f'<tool_call>{{"name": "add", "arguments": {{"a": {args["a"]}, "b": {args["b"]}}}}}</tool_call>' in prompt
    assert "<tool_response>9</tool_response>" in prompt


def test_streaming_a_call_gives_tool_call_chunks(llm):
    chunks = list(llm.bind_tools([add], tool_choice="any").stream("Add 1 and 2"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.tool_calls[0]["name"] == "add" and set(merged.tool_calls[0]["args"].values()) <= {1, 2}


def test_answers_with_tools_bound_are_still_steered_and_recorded(llm, store):
    llm.invoke("I am a physicist, please give me expert answers.")
    answer = llm.bind_tools([add]).invoke("Explain tunnelling.")
    assert answer.tool_calls == [] and answer.response_metadata["personalization"]
    assert answer.response_metadata["user_id"] == "kim"
    calls = llm.bind_tools([add], tool_choice="any").invoke("Add 1 and 2")
    texts = [m.text for m in store.conversation_messages(calls.response_metadata["conversation_id"])]
    assert texts == ["Add 1 and 2"]  # a call is not an answer: nothing is recorded for it


def test_create_agent_runs_to_a_final_answer(llm):
    from langchain.agents import create_agent

    eager = llm.model_copy(update={"call_bias": 100.0, "max_tool_rounds": 1})
    agent = create_agent(eager, [add], system_prompt="You add numbers.")
    state = agent.invoke({"messages": [HumanMessage("What is 2 plus 40?")]})
    kinds = [type(m).__name__ for m in state["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    args = state["messages"][1].tool_calls[0]["args"]
    assert set(args.values()) <= {2, 40} and state["messages"][2].content == str(args["a"] + args["b"])
    assert state["messages"][3].content and not state["messages"][3].tool_calls


def test_create_agent_with_a_response_format(llm):
    from langchain.agents import create_agent

    class Sum(BaseModel):
        total: int = Field(ge=0, le=1000)

    agent = create_agent(llm, [add], response_format=Sum)
    state = agent.invoke({"messages": [HumanMessage("What is 2 plus 40?")]})
    assert isinstance(state["structured_response"], Sum)


def test_langgraph_prebuilt_agent_loop_finishes(llm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

        eager = llm.model_copy(update={"call_bias": 100.0, "max_tool_rounds": 2})
        agent = create_react_agent(eager, [add], prompt=SystemMessage("You add numbers."))
    state = agent.invoke(
        {"messages": [("user", "Add 1 and 2, then 3 and 4")]}, config={"configurable": {"user_id": "lee"}}
    )
    final = state["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls and final.content
    assert final.response_metadata["user_id"] == "lee"
    assert 1 <= sum(isinstance(m, ToolMessage) for m in state["messages"]) <= 2
