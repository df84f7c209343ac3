"""Messages -> chat-template prompt: role mapping, merging, content blocks, and the missing-template error."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from transformers import AutoTokenizer

from panda_chat.chat_model.messages import (
    Turn,
    UnsupportedContentError,
    render_prompt,
    to_turns,
)
from panda_chat.prompt_format import ChatTemplateMissingError


def test_consecutive_messages_of_one_role_are_merged_and_system_kept():
    turns = to_turns(
        [
            SystemMessage("be brief"),
            SystemMessage("be kind"),
            HumanMessage("hi"),
            HumanMessage("there"),
            AIMessage("hello"),
            AIMessage("again"),
            HumanMessage("how are you"),
        ]
    )
    assert turns == [
        Turn("system", "be brief\n\nbe kind"),
        Turn("user", "hi\n\nthere"),
        Turn("assistant", "hello\n\nagain"),
        Turn("user", "how are you"),
    ]


def test_roles_of_every_message_kind():
    turns = to_turns(
        [
            ChatMessage(role="human", content="a"),
            ChatMessage(role="ai", content="b"),
            ToolMessage("42", tool_call_id="1"),
            ChatMessage(role="critic", content="c"),
        ]
    )
    assert [turn.role for turn in turns] == ["user", "assistant", "tool", "critic"]


def test_text_blocks_are_joined_and_reasoning_dropped():
    message = HumanMessage(content=[{"type": "text", "text": "one "}, "two", {"type": "reasoning", "reasoning": "x"}])
    assert to_turns([message]) == [Turn("user", "one two")]


def test_an_image_block_is_refused_clearly():
    message = HumanMessage(content=[{"type": "image", "url": "https://example.com/cat.png"}])
    with pytest.raises(UnsupportedContentError, match=r"text-only.*'image'"):
        to_turns([message])


def test_prompt_is_rendered_by_the_model_chat_template(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    prompt = render_prompt([Turn("system", "s"), Turn("user", "hi")], tokenizer)
    assert prompt == "<|system|>s<|end|><|user|>hi<|end|><|assistant|>"


def test_no_chat_template_is_a_clear_error_and_an_explicit_template_fixes_it(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateMissingError, match=r"no chat template.*chat_template="):
        render_prompt([Turn("user", "hi")], tokenizer)
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "
    assert render_prompt([Turn("user", "hi")], tokenizer, template) == "[user] hi\n[assistant] "


def test_a_template_that_rejects_the_conversation_says_which_roles(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}{% endfor %}"
    )
    with pytest.raises(ValueError, match="roles: system, user"):
        render_prompt([Turn("system", "s"), Turn("user", "u")], tokenizer, strict)
