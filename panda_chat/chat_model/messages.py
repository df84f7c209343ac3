"""LangChain messages -> one prompt string, through the model's own chat template.

Chat models are trained on one exact turn format, so the prompt is always rendered by the tokenizer's chat template
(or one given explicitly), never by a hand-written format. Before rendering, consecutive messages of one role are
merged into one turn: many templates reject two user turns in a row, and a model sees the merged turn the same way a
person would. System messages are kept as system turns.

An assistant turn keeps its tool calls and a tool turn the id of the call it answers (``Turn.tool_calls``,
``Turn.tool_call_id``), in the OpenAI layout chat templates read; ``chat_model.tools`` decides how a template that
has no tool support sees them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from panda_chat.prompt_format import chat_prompt


class UnsupportedContentError(ValueError):
    """A message holds content a text-only model cannot read (an image, audio, a file)."""


@dataclass(frozen=True)
class Turn:
    """One chat-template turn: a role (``system``, ``user``, ``assistant``, ``tool``) and its text."""

    role: str
    content: str
    tool_calls: tuple[dict[str, Any], ...] = ()  # assistant turns: {"id", "type": "function", "function": {...}}
    tool_call_id: str | None = None  # tool turns: the call this result answers
    name: str | None = None  # tool turns: the tool's name

    def as_dict(self) -> dict[str, Any]:
        turn: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            turn["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            turn["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            turn["name"] = self.name
        return turn


def message_text(message: BaseMessage) -> str:
    """The text of a message: a plain string, or the text blocks of a content list (other blocks are refused)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in {"reasoning", "thinking"}:
            continue  # a previous answer's reasoning is not part of the conversation text
        elif isinstance(block, dict) and block.get("type") in {"tool_use", "tool_call", "tool_call_chunk"}:
            continue  # a call block duplicates the message's tool_calls, which are rendered as calls
        else:
            kind = block.get("type", "unknown") if isinstance(block, dict) else type(block).__name__
            raise UnsupportedContentError(
                f"ChatPanda serves text-only models; a {type(message).__name__} holds a '{kind}' content block"
            )
    return "".join(parts)


def message_role(message: BaseMessage) -> str:
    """The chat-template role of a LangChain message."""
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage):
        return {"human": "user", "ai": "assistant"}.get(message.role, message.role)
    raise TypeError(f"ChatPanda cannot turn a {type(message).__name__} into a chat turn")


def to_turns(messages: Sequence[BaseMessage]) -> list[Turn]:
    """Messages -> turns, consecutive messages of one role merged (their texts joined by a blank line); tool calls
    and tool results are kept (a tool result is never merged: each answers its own call)."""
    turns: list[Turn] = []
    for message in messages:
        role, text = message_role(message), message_text(message)
        calls = tuple(_openai_call(call) for call in message.tool_calls) if isinstance(message, AIMessage) else ()
        if isinstance(message, ToolMessage):
            turns.append(Turn("tool", text, tool_call_id=message.tool_call_id, name=message.name))
        elif turns and turns[-1].role == role and role != "tool":
            merged = f"{turns[-1].content}\n\n{text}" if turns[-1].content and text else turns[-1].content or text
            turns[-1] = Turn(role, merged, tool_calls=turns[-1].tool_calls + calls)
        else:
            turns.append(Turn(role, text, tool_calls=calls))
    return turns


def _openai_call(call: Mapping[str, Any]) -> dict[str, Any]:
    """A LangChain tool call in the layout chat templates expect (arguments as an object)."""
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {"name": call["name"], "arguments": dict(call.get("args") or {})},
    }


def render_prompt(
    turns: Sequence[Turn],
    tokenizer: Any,
    chat_template: str | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text the model continues: the turns rendered by ``panda_chat.prompt_format.chat_prompt`` (the chat
    template, ``chat_template`` replacing the tokenizer's own; ``tools`` to the template's ``tools`` variable)."""
    return chat_prompt(tokenizer, [turn.as_dict() for turn in turns], chat_template, tools, add_generation_prompt)
