"""Tool calling for a local chat model: how tools and calls are shown to the model, and how a call is written.

A call is always the JSON object ``{"name": <a bound tool>, "arguments": <an instance of its schema>}``, decoded
under a JSON-schema constraint (``structured``), so the name is one of the bound tools (chosen by the model's
likelihood) and the arguments always validate.

How the model sees tools depends on its chat template, found out once per template by rendering probes
(``ToolFormat.of``):

- a template that renders ``tools=`` gets them there; otherwise they are described in a system turn;
- a template that renders an assistant turn's ``tool_calls`` gets past calls that way, and a new call is decoded
  after the same opening text the template writes before a call (e.g. ``<tool_call>\\n``), with its spacing;
  otherwise a call is the assistant turn's text, the JSON object itself;
- a template that renders a ``tool`` turn gets results that way; otherwise a result is a user turn saying which tool
  answered.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.utils.function_calling import convert_to_openai_tool

from panda_chat.chat_model.messages import Turn, render_prompt

_PROBE_TOOL = "probe_tool_7f3a"
_PROBE_ARG = "probe_arg_7f3a"
_PROBE_RESULT = "probe_result_7f3a"
_PROBE_SPEC = {
    "type": "function",
    "function": {
        "name": _PROBE_TOOL,
        "description": "probe",
        "parameters": {"type": "object", "properties": {_PROBE_ARG: {"type": "string"}}, "required": [_PROBE_ARG]},
    },
}

ANY = "any"
AUTO = "auto"
NONE = "none"


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Tools (LangChain tools, functions, pydantic classes, TypedDicts, OpenAI dicts) as OpenAI tool dicts."""
    return [convert_to_openai_tool(tool) for tool in tools]


def tool_choice_of(choice: Any, tools: Sequence[dict[str, Any]]) -> str:
    """``auto``, ``any`` or ``none``, or the name of the one tool to call, from any of LangChain's spellings."""
    names = [tool["function"]["name"] for tool in tools]
    if choice is None or choice == AUTO:
        return AUTO
    if choice is True or choice in (ANY, "required"):
        return ANY
    if choice is False or choice == NONE:
        return NONE
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if isinstance(choice, str) and choice in names:
        return choice
    raise ValueError(
        f"tool_choice must be 'auto', 'any', 'required', 'none' or a bound tool's name ({', '.join(names)}), "
        f"got {choice!r}"
    )


def call_schema(
    tools: Sequence[dict[str, Any]], only: str | None = None, arguments_key: str = "arguments"
) -> dict[str, Any]:
    """The JSON schema of one call to any of ``tools`` (or to the tool named ``only``)."""
    branches = []
    for tool in tools:
        function = tool["function"]
        if only is not None and function["name"] != only:
            continue
        parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
        parameters.setdefault("type", "object")
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, arguments_key: parameters},
                "required": ["name", arguments_key],
                "additionalProperties": False,
            }
        )
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def tools_instruction(tools: Sequence[dict[str, Any]]) -> str:
    """The system text that describes the tools to a model whose template has no place for them."""
    listed = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in tools)
    return (
        "You can call these tools:\n"
        f"{listed}\n"
        'To call one, answer with only a JSON object {"name": <tool name>, "arguments": <its arguments>}. '
        "Otherwise answer the user directly."
    )


@dataclass(frozen=True)
class ToolFormat:
    """How one chat template shows tools, calls and results (see the module docstring)."""

    template_tools: bool = False
    template_calls: bool = False
    template_results: bool = False
    opening: str = ""  # text the template writes before a call's JSON
    separators: dict[str, Any] = field(default_factory=dict)
    arguments_key: str = "arguments"  # some templates say "parameters"

    @classmethod
    def of(cls, tokenizer: Any, chat_template: str | None) -> ToolFormat:
        template = chat_template or getattr(tokenizer, "chat_template", None) or ""
        key = (id(tokenizer), template)
        with _formats_lock:
            if key not in _formats:
                _formats[key] = cls._probe(tokenizer, chat_template)
            return _formats[key]

    @classmethod
    def _probe(cls, tokenizer: Any, chat_template: str | None) -> ToolFormat:
        user = Turn("user", "hello")

        def render(turns: list[Turn], **kwargs: Any) -> str | None:
            try:
                return render_prompt(turns, tokenizer, chat_template, **kwargs)
            except ValueError:
                return None

        plain = render([user]) or ""
        with_tools = render([user], tools=[_PROBE_SPEC]) or ""
        template_tools = _PROBE_TOOL in with_tools and _PROBE_TOOL not in plain
        call = {
            "id": "call_probe",
            "type": "function",
            "function": {"name": _PROBE_TOOL, "arguments": {_PROBE_ARG: "v"}},
        }
        called = render([user, Turn("assistant", "", tool_calls=(call,))], add_generation_prompt=False) or ""
        opening, separators, template_calls, arguments_key = "", {}, False, "arguments"
        if _PROBE_TOOL in called and called.startswith(plain):
            found = _call_json(called[len(plain) :])
            if found is not None:
                opening, body, value = found
                template_calls = True
                arguments_key = next((key for key in value if key != "name"), "arguments")
                separators = {
                    "item_separator": ", " if '", "' in body else ",",
                    "key_separator": ": " if '": ' in body else ":",
                }
        result = (
            render(
                [user, Turn("assistant", "x"), Turn("tool", _PROBE_RESULT, tool_call_id="call_probe", name=_PROBE_TOOL)]
            )
            or ""
        )
        return cls(template_tools, template_calls, _PROBE_RESULT in result, opening, separators, arguments_key)

    def prompt_turns(self, turns: Sequence[Turn], tools: Sequence[dict[str, Any]] | None) -> list[Turn]:
        """The turns as this template can show them: calls and results in its own terms, else as plain text, and
        the tools described in a system turn when the template has no place for them."""
        shown: list[Turn] = []
        names = {call["id"]: call["function"]["name"] for turn in turns for call in turn.tool_calls}
        for turn in turns:
            if turn.tool_calls and not self.template_calls:
                calls = "\n".join(_call_text(call) for call in turn.tool_calls)
                turn = Turn(turn.role, f"{turn.content}\n{calls}" if turn.content else calls)
            elif turn.role == "tool" and not self.template_results:
                tool = turn.name or names.get(turn.tool_call_id or "", "a tool")
                turn = Turn("user", f"Result of {tool}: {turn.content}")
            if shown and shown[-1].role == turn.role and turn.role in ("user", "system") and not turn.tool_calls:
                shown[-1] = replace(shown[-1], content=f"{shown[-1].content}\n\n{turn.content}")
            else:
                shown.append(turn)
        if tools and not self.template_tools:
            instruction = tools_instruction(tools)
            if shown and shown[0].role == "system":
                shown[0] = replace(shown[0], content=f"{shown[0].content}\n\n{instruction}")
            else:
                shown.insert(0, Turn("system", instruction))
        return shown


_formats: dict[tuple[int, str], ToolFormat] = {}
_formats_lock = threading.Lock()


def _call_text(call: dict[str, Any]) -> str:
    function = call["function"]
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        arguments = json.loads(arguments or "{}")
    return json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False)


def _call_json(text: str) -> tuple[str, str, dict[str, Any]] | None:
    """(the text before the call's JSON object, the object's text, the object) in a rendered probe call."""
    decoder = json.JSONDecoder()
    position = text.find(_PROBE_TOOL)
    for start in range(position, -1, -1):
        if text[start] != "{":
            continue
        try:
            value, end = decoder.raw_decode(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("name") == _PROBE_TOOL:
            return text[:start], text[start : start + end], value
    return None


def parse_call(text: str) -> dict[str, Any]:
    """A LangChain tool call from a decoded call's JSON."""
    value, _ = json.JSONDecoder().raw_decode(text.strip())
    arguments = value.get("arguments", value.get("parameters")) or {}
    return {"name": value["name"], "args": arguments, "id": new_call_id(), "type": "tool_call"}


def calls_since_last_user(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """The tool calls the assistant made since the user last spoke (to bound an agent loop)."""
    calls: list[dict[str, Any]] = []
    for turn in reversed(turns):
        if turn.role == "user":
            break
        calls.extend(turn.tool_calls)
    return calls
