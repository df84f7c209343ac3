"""The prompt as the decoder sees it: the one place that applies a tokenizer's chat template and tokenises the result.

Reward heads are trained on the hidden states of prompts formatted exactly as the decoder will later format them;
a second, slightly different formatter would make a head score prompts unlike the ones it learned from. So training
(base LM, heads, reward models), decoding, evaluation, ChatPanda and the demo recipe all format prompts here.

Two forms, one rule each:

- ``chat_prompt``: a conversation (a list of ``{"role", "content", ...}`` turns) rendered by the chat template (the
  tokenizer's, or one given explicitly), ending with the assistant cue. A tokenizer without a template is an error:
  there is no honest way to flatten a conversation into the turn format a model was trained on.
- ``question_prompt``: one user question, as ChatPanda formats a single user message. A tokenizer without a template
  (a plain base LM) gets the question itself: that is how such a model is prompted, and how
  ``panda-chat generate --raw`` and ``eval --no-chat-template`` feed it.

``encode_prompt`` tokenises a prompt text: with the tokenizer's special tokens (e.g. BOS) unless the text already
starts with the BOS token, so a template that writes BOS itself never gets a second one. ``response_ids`` tokenises
the text that follows a prompt (no special tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ChatTemplateMissingError(ValueError):
    """The model's tokenizer has no chat template and none was given."""


def chat_prompt(
    tokenizer: Any,
    turns: Sequence[Mapping[str, Any]],
    chat_template: str | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """The text the model continues: ``turns`` rendered by the chat template, ending with the assistant cue.

    ``tokenizer`` is a Hugging Face tokenizer; ``chat_template`` (a Jinja string) replaces the tokenizer's own;
    ``tools`` (OpenAI tool dicts) go to the template's ``tools`` variable.
    """
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ChatTemplateMissingError(
            f"the tokenizer of '{name}' has no chat template, so ChatPanda cannot format messages for it; "
            "use an instruction-tuned (chat) model, or pass ChatPanda(chat_template='<jinja template>')"
        )
    if not turns:
        raise ValueError("ChatPanda needs at least one message")
    try:
        return tokenizer.apply_chat_template(
            [dict(turn) for turn in turns],
            chat_template=template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **({"tools": list(tools)} if tools else {}),
        )
    except Exception as error:  # jinja raises its own TemplateError types (e.g. "roles must alternate")
        roles = ", ".join(str(turn.get("role")) for turn in turns)
        raise ValueError(f"the chat template rejected the conversation (roles: {roles}): {error}") from error


def question_prompt(tokenizer: Any, question: str) -> str:
    """One user question as the decoder is given it: the chat template with the assistant cue when the tokenizer
    has one, else the question itself."""
    if getattr(tokenizer, "chat_template", None):
        return chat_prompt(tokenizer, [{"role": "user", "content": question}])
    return question


def encode_prompt(tokenizer: Any, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids of a prompt text.

    ``add_special_tokens`` None (the default) adds the tokenizer's special tokens unless the text already starts with
    the BOS token (a chat template that writes BOS); True or False force the choice.
    """
    if add_special_tokens is None:
        bos = tokenizer.bos_token
        add_special_tokens = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def response_ids(tokenizer: Any, response: str) -> list[int]:
    """Token ids of a response text that continues a prompt: no special tokens (a BOS belongs to the prompt's start).
    Prompt ids + response ids is the sequence a reward head or reward model scores."""
    return list(tokenizer(response, add_special_tokens=False)["input_ids"])


def question_ids(tokenizer: Any, question: str) -> list[int]:
    """Token ids of one user question as the decoder sees it: ``encode_prompt(question_prompt(question))``."""
    return encode_prompt(tokenizer, question_prompt(tokenizer, question))
